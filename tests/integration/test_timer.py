"""The timer on real Kafka: never early, bursts, commands, batches, expiry, crash recovery and
failover. Each test runs timer worker processes against its own topics."""

from __future__ import annotations

import asyncio
import collections
import math
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
from tests.integration.conftest import Stack, Watcher

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

    async def tick(self, now: float) -> None:
        for p in sorted(await self.producer.partitions_for(self.topic)):
            await self.producer.send_and_wait(
                self.topic, encode(Tick(partition=p, now=now)), partition=p
            )


def dues(records: list[tuple[float, bytes]]) -> list[tuple[float, Due]]:
    return [(t, decode_as(v, Due)) for t, v in records]


def outcomes(records: list[tuple[float, bytes]]) -> list[object]:
    return [decode(v, "outcomes") for _, v in records]


def ids_of(records: list[tuple[float, bytes]]) -> set[str]:
    return {orjson.loads(v)["message_id"] for _, v in records}


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
        await w.wait_for(lambda r: len(ids_of(r)) >= n, timeout=120, what=f"{n} due events")
        await asyncio.sleep(1)
        assert_never_early(w.records)
        counts = collections.Counter((d.message_id, d.attempt) for _, d in dues(w.records))
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
        await w_due.wait_for(lambda r: "free" in ids_of(r), timeout=30, what="free")
        await asyncio.sleep(2)
        assert ids_of(w_due.records) == {"free"}
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
        await sched.tick(t0 + 11)
        await sched.tick(t0 + 10 + PAUSE_EXPIRY_SECONDS - 1)
        await asyncio.sleep(3)
        assert w_out.records == [] and w_due.records == []
        await sched.tick(t0 + 10 + PAUSE_EXPIRY_SECONDS)
        await w_out.wait_for(lambda r: len(r) >= 2, timeout=60, what="expiries")
        got = {(o.message_id, o.reason) for o in outcomes(w_out.records)}  # type: ignore[attr-defined]
        assert got == {("solo", "expired"), ("member", "expired")}
        assert w_due.records == []


@pytest.mark.parametrize("instance_id", [None, "timer-0"], ids=["dynamic", "static-member"])
async def test_kill_9_mid_dispatch_loses_nothing(stack: Stack, instance_id: str | None) -> None:
    # static membership (a StatefulSet pod's name): the restarted worker is given its
    # partitions back at once instead of after the session timeout
    if instance_id is not None:
        stack.env["KAIROS_TIMER_INSTANCE_ID"] = instance_id
    stack.start("timer")
    n = 20_000
    async with (
        Watcher(stack.settings.kafka_bootstrap or "", stack.settings.topic("due")) as w,
        Schedule(stack) as sched,
    ):
        due = math.floor(time.time()) + 6
        ids = [f"k-{i}" for i in range(n)]
        await sched.send(*(scheduled(m, due) for m in ids))
        await w.wait_for(lambda r: len(r) >= 500, timeout=60, what="dispatch to start")
        stack.stop("timer", signal.SIGKILL)
        seen_at_kill = len(ids_of(w.records))
        restarted = time.monotonic()
        stack.start("timer")
        seen = len(w.records)
        await w.wait_for(lambda r: len(r) > seen, timeout=60, what="a due event after restart")
        resumed = time.monotonic() - restarted
        await w.wait_for(lambda r: len(ids_of(r)) >= n, timeout=180, what="all due events")
        await asyncio.sleep(2)
        counts = collections.Counter((d.message_id, d.attempt) for _, d in dues(w.records))
        repeats = sum(c - 1 for c in counts.values())
        print(
            f"\nkill -9 after {seen_at_kill}/{n} emitted: all {len(counts)} reached the due "
            f"topic; repeats (same id and attempt) {repeats}; emitting again {resumed:.1f} s "
            f"after the restart began"
        )
        assert set(m for m, _ in counts) == set(ids)
        assert_never_early(w.records)


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
        await w.wait_for(lambda r: len(ids_of(r)) >= len(ids), timeout=120, what="all dues")
        assert ids_of(w.records) == set(ids)
        assert_never_early(w.records)
