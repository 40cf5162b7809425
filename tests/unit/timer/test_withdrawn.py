"""A submission its submitter was refused for (appended after ``accept_by``) is withdrawn."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from services.timer.app import appended_at, withdrawn
from tests.unit.timer.test_state import sched


@dataclass
class Message:
    timestamp: float | None
    timestamp_type: int


def test_appended_after_accept_by_is_withdrawn() -> None:
    ev, _ = sched("m1", 1_800_000_000)
    ev = ev.model_copy(update={"accept_by": datetime.fromtimestamp(1_700_000_010, UTC)})
    log_append = 1
    assert not withdrawn(ev, appended_at(Message(1_700_000_009.999, log_append)))
    assert not withdrawn(ev, appended_at(Message(1_700_000_010.0, log_append)))
    assert withdrawn(ev, appended_at(Message(1_700_000_010.001, log_append)))
    # a producer's own clock (CreateTime) says nothing about when the broker wrote it
    assert not withdrawn(ev, appended_at(Message(1_700_000_099.0, 0)))


def test_without_accept_by_nothing_is_withdrawn() -> None:
    ev, _ = sched("m1", 1_800_000_000)  # a retry from the sender carries none
    assert ev.accept_by is None
    assert not withdrawn(ev, 1_900_000_000.0)


def test_a_withdrawal_is_a_cancelled_outcome_with_its_scope() -> None:
    from schemas.events import Cancelled
    from services.timer.app import fire_event
    from services.timer.state import Entry, Fire

    ev, raw = sched("m1", 1_800_000_000)
    fire = Fire("m1", Entry(raw, ev.due_at, ev.attempt), "cancelled", 0.0, "withdrawn")
    event = fire_event(fire, 1_700_000_020.0)
    assert isinstance(event, Cancelled) and event.scope == "withdrawn"
    assert (event.message_id, event.due_at, event.recipients) == (
        "m1",
        ev.due_at,
        ev.content.rcpt_to,
    )
