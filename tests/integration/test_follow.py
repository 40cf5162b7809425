"""The log follower on a real broker: after a transactional write, a partition's end offset
counts the commit marker, which no record's offset + 1 reaches; "read your writes"
(:meth:`LifecycleProjection.sync`) must still see the follower caught up, at once, not after
its whole time limit."""

from __future__ import annotations

import asyncio

import pytest

from kairos.clock import SystemClock
from kairos.kafka.clients import make_producer
from kairos.kafka.follow import read_to_end
from kairos.kafka.producer import DurableProducer, TransactionalProducer
from services.ingest.lifecycle import LifecycleProjection
from services.ingest.publish import KafkaPublisher
from tests.integration.conftest import Stack
from tests.unit.timer.test_state import sched

pytestmark = pytest.mark.kafka


async def test_sync_sees_past_a_transaction_marker(stack: Stack) -> None:
    bootstrap = stack.settings.kafka_bootstrap or ""
    transactions = TransactionalProducer(bootstrap, f"{stack.settings.group('t')}-f", "test-f")
    plain = DurableProducer(bootstrap, "test-f")
    projection = LifecycleProjection(stack.settings, bootstrap, ":memory:")
    await transactions.start()
    await plain.start()
    await projection.start()
    try:
        publisher = KafkaPublisher(
            transactions, plain, stack.settings.topic("schedule"), SystemClock()
        )
        await publisher.publish_many([sched("f-1", 1_900_000_000)[0]])
        # a limit no test waits out: sync answers as soon as the marker is passed, or fails
        assert await projection.sync(limit=30)
        assert projection.store.get(sched("f-1", 1)[0].account_id, "f-1") is not None
        ends = await projection.end_offsets(10)
        assert ends is not None and any(end > 0 for end in ends.values())
        stored = projection.store.offsets()
        # the store's offsets stop short of the end (the marker): positions do not
        assert any(stored.get((projection.logical(tp), tp.partition), 0) < end
                   for tp, end in ends.items() if end > 0)  # fmt: skip
        assert projection.reached(ends)
    finally:
        await projection.stop()
        await transactions.stop()
        await plain.stop()


async def test_a_read_to_the_end_waits_for_a_transaction_under_way(stack: Stack) -> None:
    """A commit is acknowledged before its markers are written: a committed reader's end
    offset lags the records until then. What a reader "to the end" returns (and where the
    follower's sync waits to) must include a transaction that was under way at the call, once
    it ends; here it is held open on purpose, then committed while the readers wait."""
    bootstrap = stack.settings.kafka_bootstrap or ""
    topic = stack.settings.topic("schedule")
    producer = make_producer(bootstrap, transactional_id=f"{stack.settings.group('t')}-open")
    projection = LifecycleProjection(stack.settings, bootstrap, ":memory:")
    await producer.start()
    await projection.start()
    try:
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"{}", key=b"open-1")
        reading = asyncio.create_task(read_to_end(bootstrap, topic, within=30))
        ending = asyncio.create_task(projection.end_offsets(30))
        await asyncio.sleep(0.5)
        assert not reading.done() and not ending.done()
        await producer.commit_transaction()
        records = await reading
        assert [r.key for r in records] == [b"open-1"]
        ends = await ending
        assert ends is not None and sum(ends.values()) == 2  # the record and its marker
    finally:
        await projection.stop()
        await producer.stop()
