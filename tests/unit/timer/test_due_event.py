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
