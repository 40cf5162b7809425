"""faust's fetch loop without four tasks per record.

faust's consumer hands every fetched record to the streams with
``await self.wait_first(callback(message), self.suspend_flow.wait())``: a rebalance (which
sets ``suspend_flow``) must be able to interrupt a delivery that waits (on a full stream
buffer, or on flow control). ``Service.wait_first`` makes a task of each argument and of the
service's ``stopped`` and ``crashed`` events, and waits for the first: four tasks and an
``asyncio.wait`` per record, most of the timer's cost of taking a schedule in after its own
work (profiled). Yet a delivery almost never waits.

:func:`wait_first_eagerly` runs the delivery first, at once, as an eager task would (Python
3.12's ``asyncio.eager_task_factory``, which 3.11 lacks): when it finishes without waiting,
that is its result and nothing else is made. When it waits, the started delivery is handed,
as it is, to faust's ``wait_first`` with the other events, and all goes on as before:
interrupted by a rebalance, stop or crash exactly as faust's own.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Coroutine
from typing import Any

from mode.services import WaitResults


async def resume(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Any:
    """Go on with ``coro``, which was started by hand and is waiting on ``waiting_on`` (what it
    yielded: a future, or ``None`` for a bare yield), as a task would have. What ``coro``'s
    awaitable ends with (its result, an exception, a cancellation) is passed on to it."""
    while True:
        try:
            if waiting_on is None:
                await asyncio.sleep(0)
            else:
                # as a task does with what its coroutine yields: the future is waited for
                # here now, no longer by ``coro`` (which set the flag when it yielded it)
                waiting_on._asyncio_future_blocking = False
                await waiting_on
        except BaseException as exc:  # a cancellation too: ``coro`` gets to handle it
            try:
                waiting_on = coro.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                waiting_on = coro.send(None)
            except StopIteration as done:
                return done.value


def wait_first_eagerly(original: Any) -> Any:
    """``Service.wait_first`` that, called as faust's fetch loop calls it (a delivery and one
    event to wait for), first runs the delivery itself; otherwise ``original`` does it all."""

    async def wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:  # noqa: ASYNC109 (mode's signature)
        if len(coros) != 2 or timeout is not None or not inspect.iscoroutine(coros[0]):
            return await original(self, *coros, timeout=timeout)
        delivery, other = coros
        try:
            waiting_on = delivery.send(None)
        except BaseException as exc:  # finished (StopIteration) or failed, without waiting
            if inspect.iscoroutine(other):
                other.close()  # never started: nothing to wait for
            if isinstance(exc, StopIteration):
                return WaitResults([delivery], [exc.value], False)
            raise
        return await original(self, resume(delivery, waiting_on), other)

    return wait_first


def eager_deliveries() -> None:
    """Give faust's consumer (the aiokafka driver's) :func:`wait_first_eagerly`."""
    from faust.transport.drivers import aiokafka as driver

    consumer = driver.Consumer
    if getattr(consumer, "_kairos_eager", False):
        return
    consumer.wait_first = wait_first_eagerly(consumer.wait_first)  # type: ignore[method-assign]
    consumer._kairos_eager = True  # type: ignore[attr-defined]
