"""``kairos trace``: a message's events in time order, each with the service that wrote it."""

from __future__ import annotations

import orjson

from kairos.trace import steps_of


def ev(kind: str, at: str, **extra: object) -> bytes:
    return orjson.dumps({"type": kind, "occurred_at": at, "message_id": "m", **extra})


def test_the_path_in_time_order_with_its_services() -> None:
    records = [
        ("outcomes", ev("delivered", "2030-01-01T09:00:00.400Z", attempt=2, smtp_code=250)),
        ("schedule", ev("scheduled", "2030-01-01T08:00:00Z", source="http", due_at=1)),
        ("due", ev("due", "2030-01-01T09:00:00.010Z", attempt=1, lateness_ms=10)),
        ("outcomes", ev("deferred", "2030-01-01T09:00:00.200Z", attempt=1, smtp_code=451)),
        ("schedule", ev("scheduled", "2030-01-01T09:00:00.210Z", source="retry", attempt=2)),
        ("dispatch", ev("dispatch", "2030-01-01T09:00:00.100Z", attempt=1)),
        ("outcomes", ev("failed", "2030-01-01T09:00:00.500Z", stage="validation")),
        ("schedule", b"not json"),
        ("schedule", orjson.dumps({"type": "tick", "occurred_at": "2030-01-01T09:00:00Z"})),
    ]
    steps = steps_of(records)
    assert [(s.service, s.type) for s in steps] == [
        ("ingest", "scheduled"),
        ("timer", "due"),
        ("validator", "dispatch"),
        ("sender", "deferred"),
        ("sender", "scheduled"),
        ("sender", "delivered"),
        ("validator", "failed"),
    ]
    assert steps[1].detail == {"lateness_ms": 10}
    line = steps[3].line(steps[0].at)
    assert "+3600.200s" in line and "sender" in line and "smtp_code=451" in line
