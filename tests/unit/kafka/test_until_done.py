"""Retrying a read through broker trouble: a result once it comes, the error once stopping."""

from __future__ import annotations

import asyncio

import pytest

from kairos.service import until_done


class Flaky:
    """Fails ``failures`` times with ``error``, then answers."""

    def __init__(self, failures: int, error: BaseException) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "read"


async def test_retries_until_it_answers() -> None:
    call = Flaky(3, ConnectionError("broker away"))
    got = await until_done("reading", call, asyncio.Event(), backoff=(0.001, 0.002))
    assert (got, call.calls) == ("read", 4)


async def test_other_errors_are_not_retried() -> None:
    call = Flaky(1, KeyError("bug"))
    with pytest.raises(KeyError):
        await until_done("reading", call, asyncio.Event(), ConnectionError, (0.001, 0.002))
    assert call.calls == 1


async def test_once_stopping_the_error_is_raised() -> None:
    stop = asyncio.Event()
    call = Flaky(10**9, ConnectionError("broker away"))
    task = asyncio.create_task(until_done("reading", call, stop, backoff=(60.0, 60.0)))
    while call.calls == 0:
        await asyncio.sleep(0)
    stop.set()  # wakes the pause at once, then the next failure is raised
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(task, 5)
    assert call.calls == 2
