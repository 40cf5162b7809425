"""The hot-path encoding of due events equals the model's (but for the fresh event id)."""

from __future__ import annotations

import orjson

from schemas.codec import decode_as, encode
from schemas.events import Due
from services.timer.app import due_bytes, fire_event
from services.timer.state import Entry, Fire
from tests.unit.timer.test_state import sched


def test_due_bytes_match_the_model() -> None:
    for batch in (None, "b1"):
        ev, raw = sched("m1", 1_800_000_000)
        if batch is not None:
            ev = ev.model_copy(update={"batch_id": batch})
            raw = encode(ev)
        fire = Fire("m1", Entry(raw, ev.due_at, 2, batch_id=batch), "due", 0.0)
        now = ev.due_at + 0.1234
        fast, lateness = due_bytes(fire, now)
        model = fire_event(fire, now)
        assert isinstance(model, Due) and lateness == model.lateness_ms == 123
        decoded = decode_as(fast, Due)
        assert decoded.model_copy(update={"event_id": model.event_id}) == model
        slow = orjson.loads(encode(model))
        slow.pop("event_id")
        got = orjson.loads(fast)
        got.pop("event_id")
        assert got == slow


def test_a_schedule_taken_in_by_reference_keeps_only_its_envelope() -> None:
    from services.timer.state import TimerState

    ev, raw = sched("m1", 1_800_000_000)
    assert ev.content.mime  # the submission carries its text
    state = TimerState({}, {}, 3)
    entry = state.schedule(ev, raw, ev.due_at - 60, ref=(3, 41)).entry
    assert entry is not None and entry.ref == (3, 41)
    kept = Entry.decode(entry.encode())
    assert kept.ref == (3, 41)
    stored = orjson.loads(kept.scheduled)
    assert stored["content"]["mime"] == ""
    assert stored["content"]["rcpt_to"] == ev.content.rcpt_to
    inline = Entry(raw, ev.due_at, 1).encode()
    assert len(entry.encode()) < len(inline) - len(ev.content.mime) + len(',"r":[3,41]')
    fire = Fire("m1", kept, "due", 0.0)
    fast, _ = due_bytes(fire, ev.due_at + 0.5)
    due = decode_as(fast, Due)
    assert due.schema_version == 2
    assert due.content_ref is not None and (due.content_ref.partition, due.content_ref.offset) == (
        3,
        41,
    )
    assert due.content.mime == "" and due.content.size == ev.content.size
    model = fire_event(fire, ev.due_at + 0.5)
    assert isinstance(model, Due) and model.content_ref == due.content_ref


def test_an_entry_written_before_the_claim_check_still_holds_its_text() -> None:
    ev, raw = sched("m1", 1_800_000_000)
    old = orjson.loads(Entry(raw, ev.due_at, 1).encode())
    assert "r" not in old  # the layout of entries already in the changelog
    entry = Entry.decode(orjson.dumps(old))
    assert entry.ref is None
    due = decode_as(due_bytes(Fire("m1", entry, "due", 0.0), ev.due_at + 1.0)[0], Due)
    assert due.content_ref is None and due.content.mime == ev.content.mime
