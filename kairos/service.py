"""Plumbing shared by the long-running services: a health and metrics HTTP endpoint, and a
consume-process-commit loop for aiokafka-based services."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import uvloop
from aiohttp import web
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kairos.logging import get_logger

log = get_logger("kairos.service")

T = TypeVar("T")


class HealthServer:
    """``/healthz`` (200 once ``ready()`` is true, 503 before) and ``/metrics`` (Prometheus)."""

    def __init__(self, host: str, port: int, ready: Callable[[], bool]) -> None:
        self.host, self.port, self.ready = host, port, ready
        self._runner: web.AppRunner | None = None

    async def _healthz(self, request: web.Request) -> web.Response:
        ok = self.ready()
        return web.json_response({"status": "ok" if ok else "starting"}, status=200 if ok else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


BatchHandler = Callable[[Sequence[ConsumerRecord[bytes, bytes]]], Awaitable[None]]


async def consume(
    consumer: AIOKafkaConsumer,
    handle: BatchHandler,
    stop: asyncio.Event,
    max_records: int = 500,
    backoff: tuple[float, float] = (0.2, 5.0),
) -> None:
    """Fetch batches, hand each to ``handle``, and commit only after it returns.

    ``handle`` must have made its effects durable (produced and acknowledged) before returning:
    a crash before the commit redelivers the batch (at least once). Broker trouble is ridden
    out, never a reason to exit: a failed fetch or commit is retried with backoff (a commit
    that fails because the group rebalanced is given up: the batch is redelivered to the
    partition's next owner, which the services' dedupe absorbs).
    """
    delay = backoff[0]
    while not stop.is_set():
        try:
            batches = await consumer.getmany(timeout_ms=200, max_records=max_records)
        except KafkaError as exc:
            log.warning("fetch failed, retrying", error=repr(exc)[:200])
            await _pause(stop, delay)
            delay = min(delay * 2, backoff[1])
            continue
        delay = backoff[0]
        # partitions side by side (one partition's records stay in one call, in order): a
        # partition with a short batch does not leave the others waiting
        await asyncio.gather(*(handle(records) for records in batches.values() if records))
        if batches:
            await commit(consumer, stop, backoff)


async def commit(
    consumer: AIOKafkaConsumer, stop: asyncio.Event, backoff: tuple[float, float] = (0.2, 5.0)
) -> bool:
    """Commit the consumer's positions, retrying through an outage; False when the group
    rebalanced meanwhile (the partitions' next owner reads the batch again) or ``stop`` came
    first."""
    delay = backoff[0]
    while True:
        try:
            await consumer.commit()
            return True
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("commit given up after a rebalance", error=repr(exc)[:200])
            return False
        except KafkaError as exc:
            if stop.is_set():
                return False
            log.warning("commit failed, retrying", error=repr(exc)[:200])
            await _pause(stop, delay)
            delay = min(delay * 2, backoff[1])


async def until_done(
    what: str,
    call: Callable[[], Awaitable[T]],
    stop: asyncio.Event,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    backoff: tuple[float, float] = (0.5, 5.0),
) -> T:
    """``call()``'s result, retried with backoff (logging "``what`` failed, retrying") through
    broker trouble of any length; its error is raised only once ``stop`` is set."""
    delay = backoff[0]
    while True:
        try:
            return await call()
        except retry_on as exc:
            if stop.is_set():
                raise
            log.warning(f"{what} failed, retrying", error=str(exc)[:200] or repr(exc))
            await _pause(stop, delay)
            delay = min(delay * 2, backoff[1])


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def install_stop_handlers(stop: asyncio.Event) -> None:
    """Set ``stop`` on SIGINT or SIGTERM, so a service drains, commits and exits cleanly."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def run_until_stopped(main: Callable[[asyncio.Event], Awaitable[Any]]) -> None:
    """Run ``main(stop)`` in a fresh event loop (uvloop's: its sockets, timers and callbacks
    cost less CPU than the standard loop's) with signal handlers installed."""

    async def runner() -> None:
        stop = asyncio.Event()
        install_stop_handlers(stop)
        await main(stop)

    uvloop.run(runner())
