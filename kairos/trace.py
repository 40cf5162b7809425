"""``kairos trace MESSAGE_ID``: one message's whole path, read from the topics, for the engineer
without a tracing backend: each event, when, which service wrote it, and how late.

Every event of a message is keyed by its message id, so the path is the records with that key
on the schedule stream, ``due``, ``dispatch`` and ``outcomes`` (and any dead letter of it),
merged in time order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from kairos.kafka.follow import read_to_end
from kairos.settings import KairosSettings
from schemas.registry import DISPATCH, DUE, OUTCOMES, SCHEDULE

#: the topics a message's events are on, in the order its path crosses them
PATH = (SCHEDULE, DUE, DISPATCH, OUTCOMES)
#: what a step says besides its type, when the event carries it
_DETAIL = (
    "due_at",
    "lateness_ms",
    "smtp_code",
    "enhanced_status",
    "smtp_text",
    "text",
    "retry_at",
    "stage",
    "reason",
    "scope",
    "batch_id",
    "source",
)


@dataclass(frozen=True)
class Step:
    """One event of a message's path."""

    at: datetime
    topic: str
    type: str
    service: str
    attempt: int | None
    detail: dict[str, Any]

    def line(self, start: datetime) -> str:
        """One line: the time, seconds since the first step, service, type, details."""
        offset = (self.at - start).total_seconds()
        attempt = f"attempt {self.attempt}" if self.attempt is not None else ""
        details = "  ".join(f"{k}={v}" for k, v in self.detail.items())
        return (
            f"{self.at.isoformat(timespec='milliseconds')}  +{offset:8.3f}s  "
            f"{self.service:9} {self.type:10} {attempt:10} {details}"
        ).rstrip()


def service_of(topic: str, event: dict[str, Any]) -> str:
    """Which service wrote ``event`` to logical ``topic`` (the registry's producers, told apart
    by the event where a topic has several)."""
    kind = event.get("type")
    if topic == "schedule":
        return "sender" if event.get("source") == "retry" else "ingest"
    if topic == "due":
        return "timer"
    if topic == "dispatch":
        return "validator"
    if kind in ("delivered", "deferred"):
        return "sender"
    if kind == "failed":
        return "validator" if event.get("stage") == "validation" else "sender"
    return "timer"  # cancelled, expired, rejected


def steps_of(records: Sequence[tuple[str, bytes]]) -> list[Step]:
    """The steps of (logical topic, value) records of one message, in time order (pure)."""
    steps = []
    for topic, value in records:
        try:
            event = orjson.loads(value)
            at = datetime.fromisoformat(str(event["occurred_at"]).replace("Z", "+00:00"))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        if not isinstance(event, dict) or event.get("type") == "tick":
            continue
        attempt = event.get("attempt")
        steps.append(
            Step(
                at=at,
                topic=topic,
                type=str(event.get("type")),
                service=service_of(topic, event),
                attempt=attempt if isinstance(attempt, int) else None,
                detail={k: event[k] for k in _DETAIL if event.get(k) not in (None, "", [])},
            )
        )
    return sorted(steps, key=lambda s: s.at)


async def trace(
    settings: KairosSettings, bootstrap: str, message_id: str, within: float = 120.0
) -> list[Step]:
    """The path of ``message_id`` as the topics hold it now (committed records only)."""
    key = message_id.encode()
    found: list[tuple[str, bytes]] = []
    for handle in PATH:
        records = await read_to_end(
            bootstrap, settings.topic(handle), within, keep=lambda r: r.key == key
        )
        found.extend((handle.name, r.value) for r in records if r.value)
    return steps_of(found)
