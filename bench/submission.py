"""Submission: ``POST /email`` from concurrent clients, and SMTP submission.

Each submission method is one function returning its figures, or None when the pipeline does
not offer it (nothing listens on its port); a new method is one more function here and one row
in the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Any

import aiohttp

from bench.harness import Pipeline
from bench.load import spread

#: due an hour after submission: submissions are measured, not delivered
LATER = 3600


async def http(p: Pipeline, api_key: str, seconds: float, clients: int = 64) -> dict[str, Any]:
    """``POST /email`` (scheduled, Bearer API key) from ``clients`` concurrent clients, each
    sending its next request when the last was answered, for ``seconds``.

    The client is aiohttp: httpx's connection pool costs more CPU per request than ingest
    itself at 64 connections (measured: one core for 40 requests/s), so it measured itself."""
    url = f"http://127.0.0.1:{p.ports['ingest']}/email"
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    stop_at = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(
        connector=connector,
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=aiohttp.ClientTimeout(total=30),
    ) as session:

        async def worker() -> None:
            while time.monotonic() < stop_at:
                started = time.monotonic()
                body = {
                    "from": "hello@bench.test",
                    "to": "user@example.org",
                    "subject": "bench",
                    "text": "x" * 400,
                    "scheduledAt": int(time.time()) + LATER,
                }
                try:
                    async with session.post(url, json=body) as r:
                        await r.read()
                        code = r.status
                except (aiohttp.ClientError, TimeoutError):
                    code = 0
                statuses[code] = statuses.get(code, 0) + 1
                if code == 202:
                    latencies.append(time.monotonic() - started)

        began = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.monotonic() - began
    return {
        "clients": clients,
        "seconds": elapsed,
        "accepted": len(latencies),
        "statuses": statuses,
        "per_s": len(latencies) / elapsed,
        "latency": spread(latencies),
    }


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 2):
        return True
    return False


async def smtp(
    p: Pipeline, api_key: str, seconds: float, clients: int = 16
) -> dict[str, Any] | None:
    """Scheduled messages over SMTP submission (AUTH with the API key, ``X-Scheduled-At``),
    ``clients`` connections each sending one message after another; None when nothing
    listens on the submission port."""
    port = p.ports["smtp"]
    if not listening(port):
        return None
    import aiosmtplib

    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal errors
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30)
        await client.connect()
        await client.login("bench", api_key)
        while time.monotonic() < stop_at:
            data = (
                "From: hello@bench.test\r\nTo: user@example.org\r\nSubject: bench\r\n"
                f"X-Scheduled-At: {int(time.time()) + LATER}\r\n\r\n" + "x" * 400
            )
            started = time.monotonic()
            try:
                await client.sendmail("hello@bench.test", ["user@example.org"], data)
                latencies.append(time.monotonic() - started)
            except aiosmtplib.SMTPException:
                errors += 1
        with contextlib.suppress(aiosmtplib.SMTPException):
            await client.quit()

    began = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.monotonic() - began
    return {
        "clients": clients,
        "seconds": elapsed,
        "accepted": len(latencies),
        "errors": errors,
        "per_s": len(latencies) / elapsed,
        "latency": spread(latencies),
    }


async def raw(p: Pipeline, seconds: float, clients: int = 64) -> dict[str, Any]:
    """The ceiling of a durable submission: ``clients`` concurrent tasks, each writing one
    scheduled event of the bench's size with ``send_and_wait`` (acks=all, idempotent, linger
    1 ms, as ingest does) and writing the next once it is acknowledged. What ingest adds on
    top (HTTP, auth, checks, composing the message) is the pipeline ÷ ceiling gap."""
    from aiokafka.admin import NewTopic

    from bench.load import build
    from kairos.kafka.clients import make_admin, make_producer

    topic = f"{p.prefix}raw-submit"  # its own topic: the timer must not take these in
    admin = make_admin(p.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, p.partitions, 1)])
    finally:
        await admin.close()
    records = build("acc_raw", "raw", 1, lambda i: int(time.time()) + LATER)
    key, value = records[0]
    producer = make_producer(p.bootstrap, linger_ms=1)
    await producer.start()
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds
    try:

        async def worker() -> None:
            while time.monotonic() < stop_at:
                started = time.monotonic()
                await producer.send_and_wait(topic, value, key=key)
                latencies.append(time.monotonic() - started)

        began = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.monotonic() - began
    finally:
        await producer.stop()
    return {
        "clients": clients,
        "seconds": elapsed,
        "per_s": len(latencies) / elapsed,
        "latency": spread(latencies),
    }
