"""Plumbing shared by the long-running services: a health and metrics HTTP endpoint, and a
consume-process-commit loop for aiokafka-based services."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kairos.logging import get_logger

log = get_logger("kairos.service")


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
) -> None:
    """Fetch batches, hand each to ``handle``, and commit only after it returns.

    ``handle`` must have made its effects durable (produced and acknowledged) before returning:
    a crash before the commit redelivers the batch (at least once).
    """
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=200, max_records=max_records)
        # partitions side by side (one partition's records stay in one call, in order): a
        # partition with a short batch does not leave the others waiting
        await asyncio.gather(*(handle(records) for records in batches.values() if records))
        if batches:
            await consumer.commit()


def install_stop_handlers(stop: asyncio.Event) -> None:
    """Set ``stop`` on SIGINT or SIGTERM, so a service drains, commits and exits cleanly."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def run_until_stopped(main: Callable[[asyncio.Event], Awaitable[Any]]) -> None:
    """Run ``main(stop)`` in a fresh event loop with signal handlers installed."""

    async def runner() -> None:
        stop = asyncio.Event()
        install_stop_handlers(stop)
        await main(stop)

    asyncio.run(runner())
