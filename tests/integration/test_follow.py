"""The log follower on a real broker: after a transactional write, a partition's end offset
counts the commit marker, which no record's offset + 1 reaches; "read your writes"
(:meth:`LifecycleProjection.sync`) must still see the follower caught up, at once, not after
its whole time limit."""

from __future__ import annotations

import pytest

from kairos.clock import SystemClock
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
