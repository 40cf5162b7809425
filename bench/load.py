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


#: a 64 KiB message: HTML (with a plain-text part) and a small attachment, like a newsletter
#: or an invoice; {id} is its Message-ID
_HTML = '<tr><td style="padding:8px">Item {i}</td><td>Lorem ipsum dolor sit amet</td></tr>\r\n'
LARGE_MIME = (
    "From: Bench <hello@bench.test>\r\nTo: user@example.org\r\nSubject: bench (64 KiB)\r\n"
    "Message-ID: <{id}@bench.test>\r\nMIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="mixed"\r\n\r\n'
    '--mixed\r\nContent-Type: multipart/alternative; boundary="alt"\r\n\r\n'
    "--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + "Your statement.\r\n" * 64 + "\r\n"
    "--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><table>\r\n"
    + "".join(_HTML.format(i=i) for i in range(570))
    + "</table></body></html>\r\n--alt--\r\n"
    '--mixed\r\nContent-Type: application/pdf; name="statement.pdf"\r\n'
    "Content-Transfer-Encoding: base64\r\n"
    'Content-Disposition: attachment; filename="statement.pdf"\r\n\r\n'
    + ("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n" * 216)
    + "--mixed--\r\n"
)
#: message sizes the bench offers: name -> MIME template
SIZES = {"1k": MIME, "64k": LARGE_MIME}


def message_id(tag: str) -> str:
    """A unique message id whose prefix ``tag`` lets the bench pick its own events out."""
    return f"{tag}-{uuid.uuid4().hex}"


def scheduled(account: str, mid: str, due: int, size: str = "1k") -> Scheduled:
    """A ``Scheduled`` event as ingest would write it for a message of ``size`` (SIZES)."""
    now = datetime.now(UTC)
    mime = SIZES[size].format(id=mid)
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


def event_size(size: str = "1k") -> int:
    """Bytes of one encoded bench event (the record size the ceiling is measured with)."""
    mid = message_id("size")
    return len(encode(scheduled("acc_bench0000000000", mid, int(time.time()), size)))


def mime_size(size: str = "1k") -> int:
    """Bytes of the message the sender relays (the SMTP ceiling's message size)."""
    return len(SIZES[size].format(id=message_id("size")).encode())


def build(
    account: str, tag: str, n: int, due: Callable[[int], int], size: str = "1k"
) -> list[tuple[bytes, bytes]]:
    """``n`` encoded events (key, value) of ``size``; the ``i``-th is due at ``due(i)``."""
    out = []
    for i in range(n):
        mid = message_id(tag)
        out.append((mid.encode(), encode(scheduled(account, mid, due(i), size))))
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
