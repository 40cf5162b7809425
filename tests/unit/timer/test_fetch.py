"""The fetch loop's eager delivery: the same answers as faust's ``wait_first``, without its
tasks when a delivery does not wait (a real mode ``Service`` stands in for the consumer)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from mode import Service

from services.timer.fetch import resume, wait_first_eagerly


class Consumer(Service):
    """A service whose ``wait_first`` is faust's, counted, and the eager one."""

    def __init__(self) -> None:
        super().__init__()
        self.originals = 0
        self.suspend_flow = asyncio.Event()

        async def counted(service: Any, *coros: Any, timeout: Any = None) -> Any:
            self.originals += 1
            return await Service.wait_first(service, *coros, timeout=timeout)

        self.eager = wait_first_eagerly(counted)

    async def deliver(self, delivery: Any) -> Any:
        """As faust's fetch loop calls it."""
        return await self.eager(self, delivery, self.suspend_flow.wait())


async def test_a_delivery_that_does_not_wait_makes_no_task() -> None:
    consumer = Consumer()
    delivered = []

    async def delivery() -> str:
        delivered.append(1)
        return "done"

    tasks = len(asyncio.all_tasks())
    result = await consumer.deliver(delivery())
    assert result.results == ["done"] and not result.stopped
    assert delivered == [1] and consumer.originals == 0
    assert len(asyncio.all_tasks()) == tasks


async def test_a_delivery_that_waits_goes_on_under_faust_s_wait_first() -> None:
    consumer = Consumer()
    room = asyncio.get_running_loop().create_future()
    steps = []

    async def delivery() -> str:
        steps.append("started")
        value = await room  # a full stream buffer
        steps.append(value)
        await asyncio.sleep(0)  # a bare yield too
        return "delivered"

    task = asyncio.create_task(consumer.deliver(delivery()))
    await asyncio.sleep(0.01)
    assert steps == ["started"] and not task.done() and consumer.originals == 1
    room.set_result("room")
    result = await asyncio.wait_for(task, 1)
    assert steps == ["started", "room"] and result.results == ["delivered"]


async def test_a_rebalance_cancels_a_waiting_delivery_as_faust_does() -> None:
    consumer = Consumer()
    ended = []

    async def delivery() -> None:
        try:
            await asyncio.Event().wait()  # flow control suspended: waits for good
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise

    task = asyncio.create_task(consumer.deliver(delivery()))
    await asyncio.sleep(0.01)
    consumer.suspend_flow.set()
    result = await asyncio.wait_for(task, 1)
    assert result.results == [True]  # what suspend_flow's wait answered: the delivery lost
    await asyncio.sleep(0.01)
    assert ended == ["cancelled"]


async def test_failures_reach_the_caller_whether_or_not_the_delivery_waited() -> None:
    consumer = Consumer()

    async def at_once() -> None:
        raise ValueError("undecodable")

    with pytest.raises(ValueError, match="undecodable"):
        await consumer.deliver(at_once())
    later = asyncio.get_running_loop().create_future()

    async def after_waiting() -> None:
        await later

    task = asyncio.create_task(consumer.deliver(after_waiting()))
    await asyncio.sleep(0.01)
    later.set_exception(KeyError("gone"))
    with pytest.raises(KeyError):
        await asyncio.wait_for(task, 1)


async def test_resume_passes_a_result_into_a_started_coroutine() -> None:
    fut = asyncio.get_running_loop().create_future()

    async def inner() -> int:
        return (await fut) + 1

    coro = inner()
    waiting_on = coro.send(None)
    assert waiting_on is fut
    fut.set_result(41)
    assert await resume(coro, waiting_on) == 42
