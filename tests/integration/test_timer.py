"""The timer on real Kafka: never early, bursts, commands, batches, expiry, crash recovery and
failover. Each test runs timer worker processes against its own topics."""

from __future__ import annotations

import asyncio
import collections
import math
import shutil
import signal
import time
import uuid
from datetime import UTC, datetime

import orjson
import pytest

from kairos.commands import broadcast_batch_command
from kairos.kafka.clients import make_producer
from schemas.codec import decode, decode_as, encode
from schemas.events import (
    CancelRequested,
    Due,
    MessageContent,
    PauseRequested,
    RescheduleRequested,
    ResumeRequested,
    Scheduled,
    Tick,
)
from services.timer.state import PAUSE_EXPIRY_SECONDS
from tests.integration.conftest import Stack, Watcher, read_to_end, wait_committed

pytestmark = pytest.mark.kafka

CONTENT = MessageContent(
    mail_from="a@x.test",
    rcpt_to=["b@y.test"],
    from_domain="x.test",
    mime="Subject: t\r\n\r\nhi",
    size=16,
)


def scheduled(mid: str, due: int, batch: str | None = None) -> Scheduled:
    now = datetime.now(UTC)
    return Scheduled(
        occurred_at=now,
        account_id="acc",
        message_id=mid,
        due_at=due,
        submitted_at=now,
        source="http",
        batch_id=batch,
        content=CONTENT,
    )


class Schedule:
    """A producer into the test's schedule stream."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.topic = stack.settings.topic("schedule")
        self.producer = make_producer(stack.settings.kafka_bootstrap or "", linger_ms=20)

    async def __aenter__(self) -> Schedule:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()

    async def send(self, *events: object) -> None:
        futures = []
        for ev in events:
            key = getattr(ev, "message_id", None)
            futures.append(
                await self.producer.send(self.topic, encode(ev), key=key.encode() if key else None)
            )  # type: ignore[arg-type]
        await asyncio.gather(*futures)

    async def partitions(self) -> list[int]:
        return sorted(await self.producer.partitions_for(self.topic))

    async def send_to(self, partition: int, *events: object) -> None:
        """Write ``events`` into one partition of the schedule stream, in order (the timer
        fires what a partition holds in the order it was written)."""
        for ev in events:
            key = getattr(ev, "message_id", None)
            await self.producer.send_and_wait(
                self.topic,
                encode(ev),  # type: ignore[arg-type]
                key=key.encode() if key else None,
                partition=partition,
            )

    async def tick(self, now: float) -> None:
        for p in await self.partitions():
            await self.producer.send_and_wait(
                self.topic, encode(Tick(partition=p, now=now)), partition=p
            )


def dues(records: list[tuple[float, bytes]]) -> list[tuple[float, Due]]:
    return [(t, decode_as(v, Due)) for t, v in records]


def outcomes(records: list[tuple[float, bytes]]) -> list[object]:
    return [decode(v, "outcomes") for _, v in records]


def ids_of(records: list[tuple[float, bytes]]) -> set[str]:
    return {orjson.loads(v)["message_id"] for _, v in records}


class SeenIds:
    """The message ids among a watcher's records, parsed once each (a predicate polled every
    100 ms over 20,000 records would otherwise take a core from the timer under test)."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.upto = 0

    def __call__(self, records: list[tuple[float, bytes]]) -> set[str]:
        for _, v in records[self.upto :]:
            self.ids.add(orjson.loads(v)["message_id"])
        self.upto = len(records)
        return self.ids


def emitted_at(value: bytes) -> float:
    return datetime.fromisoformat(orjson.loads(value)["emitted_at"]).timestamp()


async def all_dues(stack: Stack) -> list[tuple[str, int, float]]:
    """(message id, attempt, emitted at) of every due event on the stack's due topic, once the
    timer has handled every schedule-stream event written so far (faust commits an event's
    offset once its batch's due events are acknowledged): all it emitted up to now, repeats
    included, read to the end offsets (nothing to wait out)."""
    bootstrap = stack.settings.kafka_bootstrap or ""
    await wait_committed(
        bootstrap, stack.settings.group("timer"), stack.settings.topic("schedule"), timeout=180
    )
    records = await read_to_end(bootstrap, stack.settings.topic("due"))
    out = []
    for r in records:
        d = orjson.loads(r.value)
        out.append((d["message_id"], d["attempt"], emitted_at(r.value)))
    return out


def assert_never_early(records: list[tuple[float, bytes]]) -> None:
    for received, due in dues(records):
        assert due.emitted_at.timestamp() >= due.due_at, f"{due.message_id} emitted early"
        assert received >= due.due_at, f"{due.message_id} received before its second"


async def test_burst_of_10000_in_one_second_is_emitted_completely(stack: Stack) -> None:
    stack.start("timer")
    n = 10_000
    async with (
        Watcher(stack.settings.kafka_bootstrap or "", stack.settings.topic("due")) as w,
        Schedule(stack) as sched,
    ):
        due = math.floor(time.time()) + 6
        await sched.send(*(scheduled(f"burst-{i}", due) for i in range(n)))
        assert time.time() < due, "injection must finish before the due second"
        seen = SeenIds()
        await w.wait_for(lambda r: len(seen(r)) >= n, timeout=120, what=f"{n} due events")
        assert_never_early(w.records)
        # a repeat could come after the last first copy: count on all the timer emitted
        counts = collections.Counter((m, attempt) for m, attempt, _ in await all_dues(stack))
        repeats = sum(c - 1 for c in counts.values())
        last = max(t for t, _ in w.records)
        print(
            f"\nburst of {n}: last due event {last - due:.3f}s after the due second; "
            f"repeats {repeats}"
        )
        assert len(counts) == n
        assert repeats == 0, "no repeats in normal operation"


async def test_commands_on_single_messages(stack: Stack) -> None:
    stack.start("timer")
    bootstrap = stack.settings.kafka_bootstrap or ""
    async with (
        Watcher(bootstrap, stack.settings.topic("due")) as w_due,
        Watcher(bootstrap, stack.settings.topic("outcomes")) as w_out,
        Schedule(stack) as sched,
    ):
        due = math.floor(time.time()) + 4
        await sched.send(*(scheduled(m, due) for m in ("keep", "cancel", "move", "pause")))
        await sched.send(
            CancelRequested(occurred_at=datetime.now(UTC), account_id="acc", message_id="cancel"),
            RescheduleRequested(
                occurred_at=datetime.now(UTC), account_id="acc", message_id="move", due_at=due + 3
            ),
            PauseRequested(occurred_at=datetime.now(UTC), account_id="acc", message_id="pause"),
            CancelRequested(occurred_at=datetime.now(UTC), account_id="acc", message_id="ghost"),
        )
        await w_due.wait_for(lambda r: "move" in ids_of(r), timeout=30, what="move")
        got = {d.message_id: d for _, d in dues(w_due.records)}
        assert set(got) == {"keep", "move"}
        assert got["move"].due_at == due + 3
        await sched.send(
            ResumeRequested(occurred_at=datetime.now(UTC), account_id="acc", message_id="pause")
        )
        await w_due.wait_for(lambda r: "pause" in ids_of(r), timeout=30, what="resumed")
        assert_never_early(w_due.records)
        await w_out.wait_for(lambda r: len(r) >= 2, timeout=30, what="outcomes")
        types = {(o.message_id, o.type) for o in outcomes(w_out.records)}  # type: ignore[attr-defined]
        assert ("cancel", "cancelled") in types
        assert ("ghost", "rejected") in types
        assert "cancel" not in ids_of(w_due.records)


async def test_batches_pause_resume_cancel_across_partitions(stack: Stack) -> None:
    stack.start("timer")
    bootstrap = stack.settings.kafka_bootstrap or ""
    async with (
        Watcher(bootstrap, stack.settings.topic("due")) as w_due,
        Watcher(bootstrap, stack.settings.topic("outcomes")) as w_out,
        Schedule(stack) as sched,
    ):
        due = math.floor(time.time()) + 4
        paused = [f"p{i}" for i in range(20)]
        cancelled = [f"c{i}" for i in range(20)]
        await sched.send(
            *(scheduled(m, due, "PAUSED") for m in paused),
            *(scheduled(m, due, "CANCELLED") for m in cancelled),
            scheduled("free", due),
        )
        await broadcast_batch_command(
            sched.producer, stack.settings, "acc", "PAUSED", "pause", time.time()
        )
        await broadcast_batch_command(
            sched.producer, stack.settings, "acc", "CANCELLED", "cancel", time.time()
        )
        # a sentinel due the second after, in every partition: each partition's walk fires in
        # due-second order, so once its sentinel is out, a paused member it wrongly fired at
        # the due second is on the due topic before it (one partition keeps its order)
        sentinels = {f"after-{p}" for p in await sched.partitions()}
        for p in await sched.partitions():
            await sched.send_to(p, scheduled(f"after-{p}", due + 1))
        await w_due.wait_for(lambda r: sentinels <= ids_of(r), timeout=30, what="sentinels")
        assert ids_of(w_due.records) == {"free", *sentinels}
        await broadcast_batch_command(
            sched.producer, stack.settings, "acc", "PAUSED", "resume", time.time()
        )
        await w_due.wait_for(lambda r: set(paused) <= ids_of(r), timeout=30, what="resumed")
        await w_out.wait_for(lambda r: set(cancelled) <= ids_of(r), timeout=30, what="cancelled")
        assert not set(cancelled) & ids_of(w_due.records)
        assert all(o.scope == "batch" for o in outcomes(w_out.records))  # type: ignore[attr-defined]
        assert_never_early(w_due.records)


async def test_pause_expiry_driven_by_ticks(stack: Stack) -> None:
    """Time is the subject: the internal ticker is off and the test writes the ticks."""
    stack.env["KAIROS_TICK_INTERVAL"] = "0"
    stack.start("timer")
    bootstrap = stack.settings.kafka_bootstrap or ""
    async with (
        Watcher(bootstrap, stack.settings.topic("due")) as w_due,
        Watcher(bootstrap, stack.settings.topic("outcomes")) as w_out,
        Schedule(stack) as sched,
    ):
        t0 = math.floor(time.time())
        await sched.tick(t0)
        await sched.send(scheduled("solo", t0 + 10), scheduled("member", t0 + 10, "B"))
        await sched.send(
            PauseRequested(occurred_at=datetime.now(UTC), account_id="acc", message_id="solo")
        )
        await broadcast_batch_command(sched.producer, stack.settings, "acc", "B", "pause", t0)
        # sentinels in every partition, written after what they vouch for: a message due at
        # the same second (fired after solo and member, had they been fired, by the walk in
        # slot order), and after the ticks a cancel of an unknown id (its rejection goes out
        # after whatever the ticks fired); one partition keeps its order on each topic
        parts = await sched.partitions()
        due_sentinels = {f"same-second-{p}" for p in parts}
        ghosts = {f"ghost-{p}" for p in parts}
        for p in parts:
            await sched.send_to(p, scheduled(f"same-second-{p}", t0 + 10))
        await sched.tick(t0 + 11)
        await sched.tick(t0 + 10 + PAUSE_EXPIRY_SECONDS - 1)
        for p in parts:
            await sched.send_to(
                p,
                CancelRequested(
                    occurred_at=datetime.now(UTC), account_id="acc", message_id=f"ghost-{p}"
                ),
            )
        await w_due.wait_for(lambda r: due_sentinels <= ids_of(r), timeout=30, what="sentinels")
        await w_out.wait_for(lambda r: ghosts <= ids_of(r), timeout=30, what="ghost rejections")
        assert ids_of(w_due.records) == due_sentinels, "a paused message was fired"
        assert {(o.message_id, o.type) for o in outcomes(w_out.records)} == {  # type: ignore[attr-defined]
            (g, "rejected") for g in ghosts
        }, "a paused message expired early"
        await sched.tick(t0 + 10 + PAUSE_EXPIRY_SECONDS)
        await w_out.wait_for(lambda r: {"solo", "member"} <= ids_of(r), timeout=60, what="expiries")
        got = {
            (o.message_id, o.reason)  # type: ignore[attr-defined]
            for o in outcomes(w_out.records)
            if o.message_id not in ghosts  # type: ignore[attr-defined]
        }
        assert got == {("solo", "expired"), ("member", "expired")}
        assert ids_of(w_due.records) == due_sentinels


@pytest.mark.parametrize("instance_id", [None, "timer-0"], ids=["dynamic", "static-member"])
async def test_kill_9_mid_dispatch_loses_nothing(stack: Stack, instance_id: str | None) -> None:
    # static membership (a StatefulSet pod's name): the restarted worker is given its
    # partitions back at once instead of after the session timeout
    if instance_id is not None:
        stack.env["KAIROS_TIMER_INSTANCE_ID"] = instance_id
    stack.start("timer")
    n = 20_000
    bootstrap = stack.settings.kafka_bootstrap or ""
    async with (
        Watcher(bootstrap, stack.settings.topic("due")) as w,
        Schedule(stack) as sched,
    ):
        due = math.floor(time.time()) + 6
        ids = [f"k-{i}" for i in range(n)]
        await sched.send(*(scheduled(m, due) for m in ids))
        await w.wait_for(lambda r: len(r) >= 500, timeout=60, what="dispatch to start")
        stack.stop("timer", signal.SIGKILL)
        # the worker is dead: what it queued carries an emitted_at before this, what the
        # restarted worker queues one after (emitted_at is the timer's clock when it fires)
        killed_at = time.time()
        seen_at_kill = len(ids_of(w.records))
        restarted = time.monotonic()
        stack.start("timer")
        checked = 0

        def emitted_after_kill(records: list[tuple[float, bytes]]) -> bool:
            nonlocal checked
            new, checked = records[checked:], len(records)
            return any(emitted_at(v) > killed_at for _, v in new)

        await w.wait_for(emitted_after_kill, timeout=60, what="a due event after restart")
        resumed = time.monotonic() - restarted
        seen = SeenIds()
        await w.wait_for(lambda r: len(seen(r)) >= n, timeout=180, what="all due events")
        assert_never_early(w.records)
        every = await all_dues(stack)

    counts = collections.Counter((m, attempt) for m, attempt, _ in every)
    first_emitted: dict[str, float] = {}
    for m, _, at in every:
        first_emitted[m] = min(at, first_emitted.get(m, at))
    before_kill = {m for m, at in first_emitted.items() if at <= killed_at}
    repeated = {m for (m, _), c in counts.items() if c > 1}
    repeats = sum(c - 1 for c in counts.values())
    print(
        f"\nkill -9 after {len(before_kill)}/{n} emitted ({seen_at_kill} seen): all "
        f"{len(counts)} reached the due topic; repeats (same id and attempt) {repeats}; "
        f"emitting again {resumed:.1f} s after the restart began"
    )
    # the kill came mid-dispatch: some, not all, due events were out before it
    assert 0 < len(before_kill) < n, f"{len(before_kill)} of {n} emitted before the kill"
    # every message reached the due topic, as its first attempt, and nothing else came out
    assert set(counts) == {(m, 1) for m in ids}
    outcomes = await read_to_end(bootstrap, stack.settings.topic("outcomes"))
    assert outcomes == [], "the timer fired something other than due events"
    # The bound on repeats, from services/timer/app.py: the agent takes the stream in batches
    # of up to BATCH (1000) schedule events and writes the tables (index slots freed, cursor
    # advanced, pending forgotten) only after the whole batch's due events are acknowledged;
    # faust then acknowledges the batch. A kill repeats at most the due events published by
    # the batch in flight, each once (one kill, one replay). That batch's ticks fire every
    # message due by their second (drained every EMIT_CHUNK, 2000, without writing the
    # tables), so no constant bounds it: here it is the due events out before the kill
    # (2,000 when measured, one EMIT_CHUNK, all of them repeated). A repeat of one first
    # emitted after the kill would be the restarted worker repeating its own work.
    assert all(c <= 2 for c in counts.values()), "a due event repeated more than once"
    assert repeated <= before_kill, sorted(repeated - before_kill)[:10]
    assert repeats <= len(before_kill)


async def test_a_worker_on_a_new_disk_recovers_every_schedule_from_the_changelogs(
    stack: Stack,
) -> None:
    """The timer writes its tables' changelogs itself (services/timer/changelog.py), and they
    must be what faust's recovery reads: a worker whose state directory is gone, restarted
    after its offsets are committed (so it reads no schedule event again), rebuilds every
    pending schedule, cancellation, reschedule and pause from the changelogs alone."""
    stack.env["KAIROS_TIMER_STANDBY_REPLICAS"] = "0"
    stack.start("timer")
    bootstrap = stack.settings.kafka_bootstrap or ""
    async with (
        Watcher(bootstrap, stack.settings.topic("due")) as w,
        Schedule(stack) as sched,
    ):
        due = math.floor(time.time()) + 30
        ids = [f"n-{i}" for i in range(2000)]
        cancelled, moved, paused = set(ids[:100]), set(ids[100:200]), set(ids[200:300])
        await sched.send(*(scheduled(m, due) for m in ids))
        at = datetime.now(UTC)
        await sched.send(
            *(CancelRequested(occurred_at=at, account_id="acc", message_id=m) for m in cancelled),
            *(
                RescheduleRequested(occurred_at=at, account_id="acc", message_id=m, due_at=due + 2)
                for m in moved
            ),
            *(PauseRequested(occurred_at=at, account_id="acc", message_id=m) for m in paused),
        )
        group, topic = stack.settings.group("timer"), stack.settings.topic("schedule")
        await wait_committed(bootstrap, group, topic, timeout=25)
        # nothing fired yet: whatever fires after this came from the changelogs
        assert time.time() < due - 2 and w.records == []
        stack.stop("timer", signal.SIGKILL)
        shutil.rmtree(stack.settings.state_dir / "timer")
        stack.start("timer")
        expected = set(ids) - cancelled - paused
        seen = SeenIds()
        await w.wait_for(lambda r: len(seen(r)) >= len(expected), timeout=180, what="all dues")
        got = {d.message_id: d for _, d in dues(w.records)}
        assert set(got) == expected
        assert {m for m, d in got.items() if d.due_at == due + 2} == moved
        assert_never_early(w.records)
        # the pauses were recovered too: resumed, they go out now
        at = datetime.now(UTC)
        await sched.send(
            *(ResumeRequested(occurred_at=at, account_id="acc", message_id=m) for m in paused)
        )
        await w.wait_for(
            lambda r: len(seen(r)) >= len(expected | paused), timeout=60, what="resumed"
        )
        assert seen(w.records) == expected | paused


async def test_two_workers_survivor_takes_over(stack: Stack) -> None:
    stack.env["KAIROS_TIMER_STANDBY_REPLICAS"] = "1"
    stack.start("timer")
    stack.start_as(
        "timer2", "timer", env={"KAIROS_STATE_DIR": str(stack.settings.state_dir) + "-2"}
    )
    async with (
        Watcher(stack.settings.kafka_bootstrap or "", stack.settings.topic("due")) as w,
        Schedule(stack) as sched,
    ):
        base = math.floor(time.time()) + 3
        ids = [str(uuid.uuid4()) for _ in range(400)]
        await sched.send(*(scheduled(m, base + (i % 20)) for i, m in enumerate(ids)))
        await w.wait_for(lambda r: len(r) >= 20, timeout=60, what="first dues")
        stack.stop("timer2")
        seen = SeenIds()
        await w.wait_for(lambda r: len(seen(r)) >= len(ids), timeout=120, what="all dues")
        assert ids_of(w.records) == set(ids)
        assert_never_early(w.records)
