"""DurableProducer: a client that fails is replaced, and no send is lost or answered yes by
mistake (a fake aiokafka client stands in for the broker)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, OutOfOrderSequenceNumber

from kairos.kafka.producer import DurableProducer, PublishFailed, Record


class FakeClient:
    """Acknowledges sends, or fails them as the broker in ``world`` says."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.dead = False
        self.stopped = False

    async def start(self) -> None:
        if self.world.down:
            raise KafkaConnectionError("no broker")
        self.world.started += 1

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, value: bytes, key: Any = None, partition: Any = None) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.dead:
            # an idempotent producer whose sequence numbers broke: never delivers again
            fut.set_exception(OutOfOrderSequenceNumber())
        elif self.world.down:
            self.dead = True  # a batch expires and the next one breaks the sequence
            fut.set_exception(KafkaTimeoutError())
        else:
            self.world.written.append(value)
            fut.set_result((topic, len(self.world.written)))
        return fut

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}


class World:
    def __init__(self) -> None:
        self.down = False
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
