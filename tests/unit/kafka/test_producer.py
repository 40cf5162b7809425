"""DurableProducer: a client that fails is replaced, and no send is lost or answered yes by
mistake (a fake aiokafka client stands in for the broker)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, OutOfOrderSequenceNumber
from aiokafka.structs import RecordMetadata, TopicPartition

from kairos.kafka.producer import ALONE_FROM, DurableProducer, PublishFailed, Record


class FakeClient:
    """Acknowledges sends, or fails them as the broker in ``world`` says."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.dead = False
        self.stopped = False

    async def start(self) -> None:
        if self.world.down:
            raise KafkaConnectionError("no broker")
        if self.world.hang_starts > 0:
            self.world.hang_starts -= 1
            self.world.hung.append(self)
            while not self.stopped:  # deaf to cancellation, as a start can be
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0.01)
        self.world.started += 1

    async def stop(self) -> None:
        self.stopped = True

    def _outcome(self, fut: asyncio.Future[Any]) -> bool:
        """Fail ``fut`` as the broker would now; True when it may be written."""
        if self.dead:
            # an idempotent producer whose sequence numbers broke: never delivers again
            fut.set_exception(OutOfOrderSequenceNumber())
        elif self.world.down:
            self.dead = True  # a batch expires and the next one breaks the sequence
            fut.set_exception(KafkaTimeoutError())
        else:
            return True
        return False

    def _write(self, topic: str, partition: int, values: list[bytes | None]) -> RecordMetadata:
        """Append ``values`` to the partition's log; the metadata of the first."""
        log = self.world.logs.setdefault((topic, partition), [])
        offset = len(log)
        log.extend(values)
        self.world.written.extend(v for v in values if v is not None)
        tp = TopicPartition(topic, partition)
        return RecordMetadata(topic, partition, tp, offset, -1, 0, 0)

    async def send(self, topic: str, value: bytes, key: Any = None, partition: Any = None) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._outcome(fut):
            fut.set_result(self._write(topic, partition or 0, [value]))
        return fut

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.world.batch_capacity)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        self.world.handed_over += 1
        if self.world.handed_over in self.world.refuse:
            raise KafkaConnectionError("the connection broke")  # refused at once
        self.world.batches.append(len(batch.values))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._outcome(fut):
            fut.set_result(self._write(topic, partition, batch.values))
        return fut

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}


class FakeBatch:
    """A record batch holding at most ``capacity`` records."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.values: list[bytes | None] = []

    def append(self, *, key: Any, value: bytes | None, timestamp: Any) -> object | None:
        if len(self.values) >= self.capacity:
            return None  # full (as aiokafka's, it takes a first record of any size)
        self.values.append(value)
        return object()


class World:
    def __init__(self) -> None:
        #: records per batch; every (topic, partition)'s log; the size of every batch sent
        self.batch_capacity = 3
        self.logs: dict[tuple[str, int], list[bytes | None]] = {}
        self.batches: list[int] = []
        #: batches handed over so far; which of them (1 = the first) are refused at once
        self.handed_over = 0
        self.refuse: set[int] = set()
        self.down = False
        #: starts hang (a producer id that never comes) while this is above zero
        self.hang_starts = 0
        self.hung: list[FakeClient] = []
        self.started = 0
        self.written: list[bytes] = []
        self.clients: list[FakeClient] = []

    def factory(self) -> FakeClient:
        client = FakeClient(self)
        self.clients.append(client)
        return client


def producer(world: World) -> DurableProducer:
    return DurableProducer("unused", "test", factory=world.factory, backoff=(0.01, 0.02))  # type: ignore[arg-type]


async def test_a_failed_client_is_replaced_once_the_broker_is_back() -> None:
    world = World()
    p = producer(world)
    await p.start()
    assert p.healthy
    await p.publish([Record("t", b"1")], 1)
    world.down = True
    with pytest.raises(PublishFailed):
        await p.publish([Record("t", b"2")], 1)
    assert not p.healthy
    # while the broker is down, a client waiting on an answer hears no at once
    with pytest.raises(PublishFailed):
        await p.publish([Record("t", b"3")], 1)
    world.down = False
    for _ in range(200):
        if p.healthy:
            break
        await asyncio.sleep(0.01)
    assert p.healthy and p.rebuilds == 1
    assert world.clients[0].stopped
    await p.publish([Record("t", b"4")], 1)
    assert world.written == [b"1", b"4"]
    await p.stop()


async def test_publish_until_done_rides_out_an_outage() -> None:
    world = World()
    p = producer(world)
    await p.start()
    world.down = True
    task = asyncio.create_task(p.publish_until_done([Record("t", b"a"), Record("t", b"b")]))
    await asyncio.sleep(0.1)
    assert not task.done() and world.written == []
    world.down = False
    await asyncio.wait_for(task, 5)
    assert sorted(world.written) == [b"a", b"b"]
    assert p.healthy
    await p.stop()


async def test_records_with_a_partition_go_in_batches_and_the_last_offsets_are_answered() -> None:
    world = World()
    p = producer(world)
    await p.start()
    world.logs[("t", 1)] = [b"old"]  # partition 1 already holds a record
    big = b"x" * ALONE_FROM  # sent alone: ``send`` checks it against the largest request
    records = [Record("t", str(i).encode(), b"k", i % 2) for i in range(7)]
    records += [Record("t", None, b"gone", 1), Record("t", big, b"b", 0), Record("u", b"free")]
    records += [Record("v", b"few", None, 2), Record("v", b"too", None, 2)]
    acknowledged = await p.publish_until_done(records)
    assert world.logs[("t", 0)] == [b"0", b"2", b"4", b"6", big]
    assert world.logs[("t", 1)] == [b"old", b"1", b"3", b"5", None]
    assert world.logs[("u", 0)] == [b"free"]
    assert world.logs[("v", 2)] == [b"few", b"too"]
    # partition 0: five records, one big (sent alone): a full batch and one of one;
    # partition 1: four, two batches (capacity 3); too few for "v" to be batched
    assert sorted(world.batches) == [1, 1, 3, 3]
    assert acknowledged == {("t", 0): 4, ("t", 1): 4, ("u", 0): 0, ("v", 2): 1}
    await p.stop()


async def test_a_batch_refused_in_an_outage_is_sent_again_whole() -> None:
    world = World()
    p = producer(world)
    await p.start()
    world.down = True
    records = [Record("t", str(i).encode(), None, 0) for i in range(5)]
    task = asyncio.create_task(p.publish_until_done(records))
    await asyncio.sleep(0.1)
    assert not task.done() and world.logs == {}
    world.down = False
    acknowledged = await asyncio.wait_for(task, 5)
    assert world.logs[("t", 0)] == [str(i).encode() for i in range(5)]
    assert acknowledged == {("t", 0): 4} and p.rebuilds >= 1
    await p.stop()


async def test_the_batches_after_one_refused_at_once_are_sent_again_and_no_others() -> None:
    world = World()
    p = producer(world)
    await p.start()
    written = [str(i).encode() for i in range(7)]
    world.refuse = {2}  # batches of 3, 3 and 1: the second is refused as it is handed over
    acknowledged = await asyncio.wait_for(
        p.publish_until_done([Record("t", v, None, 0) for v in written]), 5
    )
    assert world.logs[("t", 0)] == written  # each once, in order
    # the first batch went through; its records are not sent again, the other four are
    assert world.batches == [3, 3, 1] and p.rebuilds == 1
    assert acknowledged == {("t", 0): 6}
    await p.stop()


async def test_a_start_that_hangs_is_abandoned_for_a_fresh_client() -> None:
    world = World()
    p = DurableProducer(
        "unused",
        "test",
        factory=world.factory,  # type: ignore[arg-type]
        backoff=(0.01, 0.02),
        start_timeout=0.05,
    )
    await p.start()
    world.down = True
    with pytest.raises(PublishFailed):
        await p.publish([Record("t", b"1")], 1)
    world.down = False
    world.hang_starts = 2  # the first two rebuilt clients never get a producer id
    for _ in range(300):
        if p.healthy:
            break
        await asyncio.sleep(0.01)
    assert p.healthy and p.rebuilds == 1
    await asyncio.gather(*p._retired)  # the abandoned clients are stopped in the background
    assert len(world.hung) == 2 and all(c.stopped for c in world.hung)
    await p.publish([Record("t", b"2")], 1)
    assert world.written == [b"2"]
    await p.stop()


async def test_a_start_that_fails_oddly_is_retried_and_a_dead_rebuild_is_restarted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    p = producer(world)
    await p.start()
    world.down = True
    with pytest.raises(PublishFailed):
        await p.publish([Record("t", b"1")], 1)
    world.down = False
    odd = [RuntimeError("not a KafkaError"), asyncio.CancelledError()]

    async def failing_start(self: FakeClient) -> None:
        if world.down:
            raise KafkaConnectionError("no broker")
        if odd:
            raise odd.pop(0)
        world.started += 1

    monkeypatch.setattr(FakeClient, "start", failing_start)
    for _ in range(300):
        if p.healthy:
            break
        await asyncio.sleep(0.01)
    assert p.healthy and not odd  # both odd failures were retried past
    # a rebuild that ended without a client (here: cancelled from outside) is not the
    # end of the producer: another starts by itself, with no use needed (ingest's
    # command producer is used rarely, and its health gates ingest's)
    world.down = True
    with pytest.raises(PublishFailed):
        await p.publish([Record("t", b"2")], 1)
    assert p._rebuild is not None
    p._rebuild.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await p._rebuild
    assert p._client is None and p._rebuild.done()
    world.down = False
    for _ in range(300):
        if p.healthy:
            break
        await asyncio.sleep(0.01)
    assert p.healthy
    await p.publish([Record("t", b"4")], 1)
    assert world.written[-1] == b"4"
    await p.stop()


async def test_publish_until_done_gives_up_only_when_stopped() -> None:
    world = World()
    p = producer(world)
    await p.start()
    world.down = True
    stop = asyncio.Event()
    stop.set()
    with pytest.raises(PublishFailed):
        await asyncio.wait_for(p.publish_until_done([Record("t", b"a")], stop), 5)
    await p.stop()


class TransactionalClient(FakeClient):
    """A transactional client whose commit the broker answers only when ``release`` is set
    (a broker frozen while the commit is out), then with ``commit_error`` or success."""

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.release = asyncio.Event()
        self.commit_error: Exception | None = None
        self.committed = 0

    async def begin_transaction(self) -> None:
        pass

    async def commit_transaction(self) -> None:
        await self.release.wait()
        if self.commit_error is not None:
            raise self.commit_error
        self.committed += 1

    async def abort_transaction(self) -> None:
        pass


@pytest.mark.parametrize("commits", [True, False], ids=["it took", "it did not"])
async def test_a_commit_answered_after_the_deadline_is_the_answer(commits: bool) -> None:
    """The commit went out before the callers' deadline and the broker answered after it: the
    callers wait for that answer and hear it, not a no at their deadline (told no, a
    message committed after all would go out)."""
    from kairos.kafka.producer import TransactionalProducer

    world = World()
    clients: list[TransactionalClient] = []

    def factory() -> TransactionalClient:
        clients.append(TransactionalClient(world))
        return clients[-1]

    p = TransactionalProducer("unused", "tx", "test", factory=factory, commit_wait=30)  # type: ignore[arg-type]
    await p.start()
    try:
        call = asyncio.create_task(p.publish([Record("t", b"1"), Record("t", b"2")], 0.2))
        await asyncio.sleep(2.5)  # past the deadline (0.2 s) and the caller's grace (2 s)
        assert not call.done(), "a caller whose commit is out was answered before the broker"
        if not commits:
            clients[0].commit_error = KafkaConnectionError("the commit failed")
        clients[0].release.set()
        if commits:
            await asyncio.wait_for(call, 5)
            assert clients[0].committed == 1
        else:
            with pytest.raises(PublishFailed):
                await asyncio.wait_for(call, 5)
    finally:
        await p.stop()
