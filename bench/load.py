"""The load the bench offers: scheduled events like ingest writes them, produced in bulk or at
a fixed rate, and the statistics it reports."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from kairos.kafka.clients import make_producer
from schemas.codec import encode
from schemas.events import MessageContent, Scheduled

T = TypeVar("T")

#: a 400-byte body: with the envelope, an event of about 1 KiB, like a short transactional mail
MIME = (
    "From: Bench <hello@bench.test>\r\nTo: user@example.org\r\nSubject: bench\r\n"
    "Message-ID: <{id}@bench.test>\r\n\r\n" + "x" * 400 + "\r\n"
)


def message_id(tag: str) -> str:
    """A unique message id whose prefix ``tag`` lets the bench pick its own events out."""
    return f"{tag}-{uuid.uuid4().hex}"


def scheduled(account: str, mid: str, due: int) -> Scheduled:
    """A ``Scheduled`` event as ingest would write it for a small message."""
    now = datetime.now(UTC)
    mime = MIME.format(id=mid)
    return Scheduled(
        occurred_at=now,
        account_id=account,
        message_id=mid,
        due_at=due,
        submitted_at=now,
        source="http",
        content=MessageContent(
            mail_from="hello@bench.test",
            rcpt_to=["user@example.org"],
            from_domain="bench.test",
            mime=mime,
            size=len(mime),
        ),
    )


def event_size() -> int:
    """Bytes of one encoded bench event (the record size the ceiling is measured with)."""
    return len(encode(scheduled("acc_bench0000000000", message_id("size"), int(time.time()))))


def build(account: str, tag: str, n: int, due: Callable[[int], int]) -> list[tuple[bytes, bytes]]:
    """``n`` encoded events (key, value); the ``i``-th is due at ``due(i)``."""
    out = []
    for i in range(n):
        mid = message_id(tag)
        out.append((mid.encode(), encode(scheduled(account, mid, due(i)))))
    return out


async def produce(bootstrap: str, topic: str, records: Sequence[tuple[bytes, bytes]]) -> float:
    """Produce ``records`` (acks=all, as every Kairos producer); the seconds until the last
    was acknowledged."""
    producer = make_producer(bootstrap, linger_ms=20)
    await producer.start()
    started = time.monotonic()
    try:
        futures = []
        for key, value in records:
            futures.append(await producer.send(topic, value, key=key))
            if len(futures) >= 20_000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.monotonic() - started


async def paced(
    bootstrap: str,
    topic: str,
    rate: int,
    seconds: float,
    make: Callable[[str], tuple[bytes, bytes]],
    tag: str,
) -> dict[str, float]:
    """Produce ``rate`` records per second for ``seconds`` (in 10 ms steps, catching up when
    behind); ``make(message_id)`` builds each. Returns message id -> time it was sent."""
    producer = make_producer(bootstrap, linger_ms=5)
    await producer.start()
    sent: dict[str, float] = {}
    futures = []
    step = 0.01
    started = time.time()
    total = int(rate * seconds)
    try:
        while len(sent) < total:
            target = min(total, int((time.time() - started) * rate) + 1)
            while len(sent) < target:
                mid = message_id(tag)
                key, value = make(mid)
                sent[mid] = time.time()
                futures.append(await producer.send(topic, value, key=key))
            if len(futures) >= 5_000:
                await asyncio.gather(*futures)
                futures.clear()
            await asyncio.sleep(step)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


def pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``; NaN when empty. ``inf`` values stand
    for events that never came (so a quantile that reaches them is unbounded)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def spread(values: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max of ``values``."""
    return {
        "p50": pct(values, 0.5),
        "p99": pct(values, 0.99),
        "max": max(values) if values else math.nan,
    }


def thin(values: Sequence[T], points: int = 2_000) -> list[T]:
    """At most about ``points`` evenly spaced items of ``values`` (the last one kept)."""
    if len(values) <= points:
        return list(values)
    step = len(values) / points
    return [values[int(i * step)] for i in range(points)] + [values[-1]]


def rate(arrivals: Sequence[float]) -> float | None:
    """Events per second between the first and the last of sorted ``arrivals``."""
    if len(arrivals) < 2 or arrivals[-1] <= arrivals[0]:
        return None
    return len(arrivals) / (arrivals[-1] - arrivals[0])
