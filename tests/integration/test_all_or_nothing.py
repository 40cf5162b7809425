"""The events of one submission are written together or not at all, on a real broker: the
second of three writes fails, nothing is scheduled (read committed), the client hears no,
and the retry writes each message once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from kairos.clock import SystemClock
from kairos.kafka.clients import make_producer
from kairos.kafka.producer import DurableProducer, TransactionalProducer
from services.ingest.publish import KafkaPublisher, PublishError
from tests.integration.conftest import Stack, read_to_end
from tests.unit.timer.test_state import sched

pytestmark = pytest.mark.kafka


class FailingSecondWrite:
    """A real producer whose second ``send`` of the next transaction fails."""

    def __init__(self, real: AIOKafkaProducer) -> None:
        self.real = real
        self.armed = True
        self.sends = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        self.sends += 1
        if self.armed and self.sends == 2:
            self.armed = False
            raise KafkaConnectionError("injected: the second write fails")
        return await self.real.send(*args, **kwargs)


async def read_all(stack: Stack, topic: str, isolation: str) -> list[dict[str, Any]]:
    records = await read_to_end(
        stack.settings.kafka_bootstrap or "", topic, isolation_level=isolation
    )
    return [json.loads(r.value) for r in records]


async def scenario(stack: Stack) -> None:
    bootstrap = stack.settings.kafka_bootstrap or ""
    topic = stack.settings.topic("schedule")
    wrapped: list[FailingSecondWrite] = []

    def factory() -> Any:
        real = make_producer(bootstrap, transactional_id=f"{stack.settings.group('t')}-aon")
        client = FailingSecondWrite(real)
        client.armed = not wrapped  # only the first client fails, once
        wrapped.append(client)
        return client

    transactions = TransactionalProducer(bootstrap, "unused", "test-tx", factory=factory)
    plain = DurableProducer(bootstrap, "test-plain")
    await transactions.start()
    await plain.start()
    publisher = KafkaPublisher(transactions, plain, topic, SystemClock(), timeout=10)
    events = [sched(f"aon-{i}", 1_900_000_000)[0] for i in range(3)]
    try:
        with pytest.raises(PublishError):
            await publisher.publish_many(events)
        # the first write did reach the broker, in a transaction that was aborted
        raw = await read_all(stack, topic, "read_uncommitted")
        assert any(v.get("message_id") == "aon-0" and v["type"] == "scheduled" for v in raw)
        committed = await read_all(stack, topic, "read_committed")
        assert not [v for v in committed if v["type"] == "scheduled"], committed
        # the client retries (a client's retry carries the same ids with an idempotency key)
        for _ in range(50):
            if transactions.healthy:
                break
            await asyncio.sleep(0.1)
        await publisher.publish_many(events)
        committed = await read_all(stack, topic, "read_committed")
        ids = [v["message_id"] for v in committed if v["type"] == "scheduled"]
        assert sorted(ids) == ["aon-0", "aon-1", "aon-2"], ids
    finally:
        await asyncio.gather(*publisher._withdrawals, return_exceptions=True)
        await transactions.stop()
        await plain.stop()


def test_a_failed_second_write_schedules_nothing_and_the_retry_each_once(stack: Stack) -> None:
    asyncio.run(scenario(stack))
