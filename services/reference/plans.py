"""The plan catalogue. An account carries its plan's limits (resolved when the plan is set),
so a change to the catalogue never silently changes existing accounts."""

from __future__ import annotations

from schemas.reference import Plan

DAY = 86400

PLANS: dict[str, Plan] = {
    "free": Plan(
        name="free",
        max_recipients=5,
        max_message_bytes=1024 * 1024,
        max_horizon_seconds=3 * DAY,
        scheduling_allowed=True,
    ),
    "starter": Plan(
        name="starter",
        max_recipients=50,
        max_message_bytes=10 * 1024 * 1024,
        max_horizon_seconds=30 * DAY,
        scheduling_allowed=True,
    ),
    "pro": Plan(
        name="pro",
        max_recipients=1000,
        max_message_bytes=20 * 1024 * 1024,
        max_horizon_seconds=30 * DAY,
        scheduling_allowed=True,
    ),
    "immediate": Plan(
        name="immediate",
        max_recipients=50,
        max_message_bytes=10 * 1024 * 1024,
        max_horizon_seconds=0,
        scheduling_allowed=False,
    ),
}

DEFAULT_PLAN = "starter"
