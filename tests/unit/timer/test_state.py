"""The timer's state machine, driven by a fake clock: never early, nothing lost, commands."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from kairos.clock import FakeClock
from schemas.codec import encode
from schemas.events import MessageContent, Scheduled
from services.timer.state import PAUSE_EXPIRY_SECONDS, Fire, TimerState

T0 = 1_800_000_000
CONTENT = MessageContent(
    mail_from="a@x.test",
    rcpt_to=["b@y.test"],
    from_domain="x.test",
    mime="Subject: t\r\n\r\nhi",
    size=16,
)


def sched(mid: str, due: int, attempt: int = 1) -> tuple[Scheduled, bytes]:
    ev = Scheduled(
        occurred_at=datetime.fromtimestamp(T0, UTC),
        account_id="a",
        message_id=mid,
        due_at=due,
        submitted_at=datetime.fromtimestamp(T0, UTC),
        source="http",
        attempt=attempt,
        content=CONTENT,
    )
    return ev, encode(ev)


class Harness:
    """A partition's state plus the publish-then-commit loop the faust agent runs."""

    def __init__(self, clock: FakeClock, partition: int = 0) -> None:
        self.clock = clock
        self.state = TimerState({}, {}, partition)
        self.fired: list[tuple[float, Fire]] = []

    def schedule(self, mid: str, due: int, attempt: int = 1) -> None:
        ev, raw = sched(mid, due, attempt)
        out = self.state.schedule(ev, raw, self.clock.now())
        self._fire(list(out.fires))

    def _fire(self, fires: list[Fire]) -> None:
        self.fired.extend((self.clock.now(), f) for f in fires)
        self.state.forget(fires)

    def tick(self, limit: int = 5000) -> None:
        now = self.clock.now()
        while True:
            walk = self.state.walk(now, limit)
            self.fired.extend((now, f) for f in walk.fires)
            self.state.commit(walk, now)
            if walk.complete:
                return

    def ids(self, kind: str = "due") -> list[str]:
        return [f.message_id for _, f in self.fired if f.kind == kind]


def test_fires_at_the_due_second_not_before() -> None:
    clock = FakeClock(T0 + 0.5)
    h = Harness(clock)
    h.tick()
    h.schedule("m", T0 + 3)
    for step in (0.5, 1.0, 0.99):
        clock.advance(step)
        h.tick()
        assert h.ids() == []
    clock.advance(0.01)  # exactly T0 + 3
    h.tick()
    assert h.ids() == ["m"]
    clock.advance(5)
    h.tick()
    assert h.ids() == ["m"], "fired twice"


def test_already_due_on_arrival_fires_at_once_with_lateness() -> None:
    clock = FakeClock(T0 + 10.25)
    h = Harness(clock)
    h.tick()
    h.schedule("late", T0 + 4)
    assert h.ids() == ["late"]
    assert h.fired[0][1].lateness == 6.25


def test_burst_in_one_second_is_emitted_completely_in_chunks() -> None:
    clock = FakeClock(T0)
    h = Harness(clock)
    h.tick()
    ids = [f"m{i}" for i in range(10_000)]
    for mid in ids:
        h.schedule(mid, T0 + 1)
    clock.advance(1.0)
    h.tick(limit=777)
    assert sorted(h.ids()) == sorted(ids)
    assert h.state.index == {b"p0:cursor": b"[1800000002,0]"}
    assert h.state.pending == {}


def test_cancel_reschedule_pause_resume() -> None:
    clock = FakeClock(T0)
    h = Harness(clock)
    h.tick()
    for mid in "abcd":
        h.schedule(mid, T0 + 5)
    h._fire(list(h.state.cancel("a", clock.now()).fires))
    assert h.ids("cancelled") == ["a"]
    assert not h.state.cancel("a", clock.now()).accepted
    assert h.state.reschedule("b", T0 + 20, clock.now()).accepted
    assert h.state.pause("c", clock.now()).accepted
    clock.advance(6)
    h.tick()
    assert h.ids() == ["d"]
    h._fire(list(h.state.resume("c", clock.now()).fires))
    assert h.ids() == ["d", "c"]
    clock.advance(14)
    h.tick()
    assert h.ids() == ["d", "c", "b"]
    assert not h.state.cancel("b", clock.now()).accepted, "already due: no longer pending"
    assert not h.state.reschedule("zz", T0 + 99, clock.now()).accepted


def test_a_paused_message_expires_72h_after_its_send_time() -> None:
    clock = FakeClock(T0)
    h = Harness(clock)
    h.tick()
    h.schedule("p", T0 + 10)
    h.state.pause("p", clock.now())
    clock.advance(10 + PAUSE_EXPIRY_SECONDS - 1)
    h.tick()
    assert h.fired == []
    clock.advance(1)
    h.tick()
    assert h.ids("expired") == ["p"]
    assert h.state.pending == {}


def test_duplicate_schedule_is_ignored_and_retry_attempt_replaces() -> None:
    clock = FakeClock(T0)
    h = Harness(clock)
    h.tick()
    h.schedule("m", T0 + 2)
    h.schedule("m", T0 + 2)
    clock.advance(2)
    h.tick()
    assert h.ids() == ["m"]
    h.schedule("m", T0 + 60, attempt=2)
    clock.advance(60)
    h.tick()
    assert [(f.message_id, f.entry.attempt) for _, f in h.fired] == [("m", 1), ("m", 2)]


def test_a_restart_resumes_from_the_cursor_without_skipping_or_repeating() -> None:
    clock = FakeClock(T0)
    h = Harness(clock)
    h.tick()
    for i in range(50):
        h.schedule(f"m{i}", T0 + 1 + i % 7)
    clock.advance(3.5)
    h.tick()
    first = h.ids()
    # a new process: same stores (restored from the changelog), fresh objects
    h2 = Harness(clock)
    h2.state = TimerState(h.state.pending, h.state.index, 0)
    clock.advance(100)
    h2.tick()
    assert sorted(first + h2.ids()) == sorted(f"m{i}" for i in range(50))
    assert not set(first) & set(h2.ids())


@settings(max_examples=60, deadline=None)
@given(
    dues=st.lists(st.integers(min_value=-5, max_value=40), min_size=1, max_size=60),
    steps=st.lists(st.floats(min_value=0.01, max_value=3.0), min_size=1, max_size=40),
    limit=st.integers(min_value=1, max_value=50),
)
def test_never_early_and_each_fires_once(dues: list[int], steps: list[float], limit: int) -> None:
    clock = FakeClock(T0 + 0.3)
    h = Harness(clock)
    h.tick()
    for i, d in enumerate(dues):
        h.schedule(f"m{i}", T0 + d)
        if i % 5 == 0:
            clock.advance(steps[i % len(steps)])
            h.tick(limit)
    for s in steps:
        clock.advance(s)
        h.tick(limit)
    clock.advance(60)
    h.tick(limit)
    for at, fire in h.fired:
        assert at >= fire.entry.due, f"{fire.message_id} fired {fire.entry.due - at}s early"
        assert fire.lateness >= 0
    assert sorted(h.ids()) == sorted(f"m{i}" for i in range(len(dues)))
    assert all(math.isfinite(at) for at, _ in h.fired)


def test_rescheduled_back_and_forth_fires_once() -> None:
    clock = FakeClock(T0)
    h = Harness(clock)
    h.tick()
    h.schedule("m", T0 + 5)
    h.state.reschedule("m", T0 + 7, clock.now())
    h.state.reschedule("m", T0 + 5, clock.now())
    clock.advance(10)
    h.tick()
    assert h.ids() == ["m"]


def batch_schedule(h: Harness, mid: str, due: int, batch: str) -> None:
    ev, _ = sched(mid, due)
    ev = ev.model_copy(update={"batch_id": batch})
    h._fire(list(h.state.schedule(ev, encode(ev), h.clock.now()).fires))


def test_batch_pause_resume_and_cancel() -> None:
    clock = FakeClock(T0)
    h = Harness(clock)
    h.tick()
    for i in range(4):
        batch_schedule(h, f"b{i}", T0 + 5 + i, "B")
    batch_schedule(h, "other", T0 + 5, "C")
    assert h.state.batch("B", "pause", clock.now()).accepted
    clock.advance(10)
    h.tick()
    assert h.ids() == ["other"]
    batch_schedule(h, "late-member", T0 + 6, "B")  # arrives while paused, already overdue
    assert h.ids() == ["other"]
    h._fire(list(h.state.batch("B", "resume", clock.now()).fires))
    assert sorted(h.ids()) == sorted(["other", "b0", "b1", "b2", "b3", "late-member"])
    for i in range(3):
        batch_schedule(h, f"c{i}", T0 + 100, "C")
    h._fire(list(h.state.batch("C", "cancel", clock.now()).fires))
    assert sorted(h.ids("cancelled")) == ["c0", "c1", "c2"]
    assert all(f.scope == "batch" for _, f in h.fired if f.kind == "cancelled")
    batch_schedule(h, "c-after", T0 + 200, "C")
    assert "c-after" in h.ids("cancelled"), "a cancelled batch cancels late arrivals"
    clock.advance(300)
    h.tick()
    assert not any(i.startswith("c") for i in h.ids())
    assert h.state.pending == {}


def test_a_batch_paused_past_72h_expires() -> None:
    clock = FakeClock(T0)
    h = Harness(clock)
    h.tick()
    batch_schedule(h, "x", T0 + 2, "B")
    h.state.batch("B", "pause", clock.now())
    clock.advance(3)
    h.tick()
    clock.advance(PAUSE_EXPIRY_SECONDS - 2)
    h.tick()
    assert h.ids("expired") == []
    clock.advance(1)
    h.tick()
    assert h.ids("expired") == ["x"]
