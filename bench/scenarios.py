"""The measured scenarios. Each returns a dict of figures (seconds, per-second rates, bytes)."""

from __future__ import annotations

import asyncio
import math
import re
import signal
import statistics
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka.admin import NewTopic
from aiokafka.structs import TopicPartition

from bench.harness import Pipeline, TopicWatch
from kairos.kafka.clients import make_admin, make_consumer, make_producer
from kairos.kafka.local import LocalKafka
from kairos.settings import KairosSettings
from schemas.codec import encode
from schemas.events import MessageContent, Scheduled

MIME = (
    "From: Bench <hello@bench.test>\r\nTo: user@example.org\r\nSubject: bench\r\n"
    "Message-ID: <{id}@bench.test>\r\n\r\n" + "x" * 400 + "\r\n"
)


def scheduled(account: str, mid: str, due: int) -> Scheduled:
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


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


async def inject(bootstrap: str, topic: str, events: list[Scheduled]) -> float:
    """Produce the events (acks=all); returns the seconds it took."""
    producer = make_producer(bootstrap, linger_ms=20)
    await producer.start()
    started = time.monotonic()
    try:
        futures = [await producer.send(topic, encode(e), key=e.message_id.encode()) for e in events]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.monotonic() - started


# -- the ceiling -------------------------------------------------------------------------------


def kafka_perf(settings: KairosSettings, bootstrap: str, n: int, size: int) -> dict[str, Any]:
    """Kafka's own ProducerPerformance and ConsumerPerformance on this broker."""
    libs = LocalKafka.from_settings(settings).ensure_jars()
    java = LocalKafka.from_settings(settings).find_java()
    topic = f"bench-perf-{uuid.uuid4().hex[:6]}"
    cp = f"{libs}/*"
    prod = subprocess.run(
        [
            java,
            "-cp",
            cp,
            "org.apache.kafka.tools.ProducerPerformance",
            "--topic",
            topic,
            "--num-records",
            str(n),
            "--record-size",
            str(size),
            "--throughput",
            "-1",
            "--producer-props",
            f"bootstrap.servers={bootstrap}",
            "acks=all",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    m = re.search(
        r"([\d.]+) records/sec", prod.stdout.strip().splitlines()[-1] if prod.stdout.strip() else ""
    )
    cons = subprocess.run(
        [
            java,
            "-cp",
            cp,
            "org.apache.kafka.tools.ConsumerPerformance",
            "--bootstrap-server",
            bootstrap,
            "--topic",
            topic,
            "--messages",
            str(n),
            "--timeout",
            "60000",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    rows = [line for line in cons.stdout.splitlines() if line and line[0].isdigit()]
    fields = rows[-1].split(", ") if rows else []
    return {
        "producer_records_per_s": float(m.group(1)) if m else None,
        "consumer_records_per_s": float(fields[5]) if len(fields) > 5 else None,
    }


async def raw_relay(
    bootstrap: str, partitions: int, events: list[Scheduled], hops: int = 4
) -> dict[str, Any]:
    """The same messages through ``hops`` plain aiokafka consume-produce hops."""
    names = [f"bench-relay-{uuid.uuid4().hex[:6]}-{i}" for i in range(hops + 1)]
    admin = make_admin(bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    await admin.close()
    await asyncio.sleep(1)
    n = len(events)

    async def relay(src: str, dst: str) -> None:
        consumer = make_consumer(bootstrap, f"relay-{src}", src)
        producer = make_producer(bootstrap, linger_ms=5)
        await consumer.start()
        await producer.start()
        done = 0
        try:
            while done < n:
                batch = await consumer.getmany(timeout_ms=100, max_records=2000)
                futures = []
                for records in batch.values():
                    for r in records:
                        futures.append(await producer.send(dst, r.value, key=r.key))
                await asyncio.gather(*futures)
                done += len(futures)
                if futures:
                    await consumer.commit()
        finally:
            await consumer.stop()
            await producer.stop()

    last = TopicWatch(bootstrap, names[-1])
    await last.start()
    tasks = [asyncio.create_task(relay(names[i], names[i + 1])) for i in range(hops)]
    await asyncio.sleep(3)  # let the relays join their groups
    started = time.time()
    await inject(bootstrap, names[0], events)
    await last.wait(n, 600)
    elapsed = max(t for t, _ in last.records) - started
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await last.stop()
    return {"relay_seconds": elapsed, "relay_per_s": n / elapsed}


# -- the pipeline ------------------------------------------------------------------------------


async def burst(p: Pipeline, account: str, n: int) -> dict[str, Any]:
    """N messages all due in the same second."""
    due_watch = TopicWatch(p.bootstrap, p.topic("due"))
    out_watch = TopicWatch(p.bootstrap, p.topic("outcomes"))
    await due_watch.start()
    await out_watch.start()
    sent_before = p.sink.count
    # the due second: after the injection has certainly finished (measured rate + margin)
    probe = await inject(
        p.bootstrap,
        p.topic("schedule"),
        [scheduled(account, f"probe-{i}", int(time.time())) for i in range(200)],
    )
    estimate = probe / 200 * n
    due = math.ceil(time.time() + estimate * 1.5 + 3)
    events = [scheduled(account, f"burst-{i}-{uuid.uuid4().hex[:6]}", due) for i in range(n)]
    injected = await inject(p.bootstrap, p.topic("schedule"), events)
    late_injection = time.time() > due
    ids = {e.message_id for e in events}
    await due_watch.wait(n + 200, 1800)
    dues = [(t, orjson.loads(v)) for t, v in due_watch.records]
    dues = [(t, d) for t, d in dues if d["message_id"] in ids]
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        delivered = [orjson.loads(v) for _, v in out_watch.records]
        if sum(1 for d in delivered if d["message_id"] in ids) >= n:
            break
        await asyncio.sleep(0.2)
    outs = [(t, orjson.loads(v)) for t, v in out_watch.records]
    outs = [(t, d) for t, d in outs if d["message_id"] in ids]
    await due_watch.stop()
    await out_watch.stop()
    lateness = [d["lateness_ms"] / 1000 for _, d in dues]
    early_due = sum(
        1
        for t, d in dues
        if datetime.fromisoformat(d["emitted_at"]).timestamp() < d["due_at"] or t < d["due_at"]
    )
    early_delivery = sum(
        1
        for _, d in outs
        if d["type"] == "delivered"
        and datetime.fromisoformat(d["delivered_at"]).timestamp() < d["due_at"]
    )
    return {
        "n": n,
        "injection_seconds": injected,
        "injection_finished_after_due": late_injection,
        "last_due_after_due_second": max(t for t, _ in dues) - due if dues else None,
        "last_delivered_after_due_second": max(t for t, _ in outs) - due if outs else None,
        "due_events": len(dues),
        "outcomes": len(outs),
        "delivered": sum(1 for _, d in outs if d["type"] == "delivered"),
        "relayed_by_sink": p.sink.count - sent_before,
        "lateness_p50": pct(lateness, 0.5),
        "lateness_p99": pct(lateness, 0.99),
        "lateness_max": max(lateness) if lateness else None,
        "early": early_due + early_delivery,
        "lateness_series": [(t - due, d["lateness_ms"] / 1000) for t, d in dues][
            :: max(1, n // 2000)
        ],
    }


async def steady(p: Pipeline, account: str, rate: int, seconds: int) -> dict[str, Any]:
    """Messages scheduled at a fixed rate, each due 2 s after it is produced."""
    due_watch = TopicWatch(p.bootstrap, p.topic("due"))
    out_watch = TopicWatch(p.bootstrap, p.topic("outcomes"))
    await due_watch.start()
    await out_watch.start()
    producer = make_producer(p.bootstrap, linger_ms=5)
    await producer.start()
    ids: set[str] = set()
    started = time.time()
    tick = 0.1
    per_tick = max(1, int(rate * tick))
    futures = []
    for step in range(int(seconds / tick)):
        target = started + step * tick
        await asyncio.sleep(max(0.0, target - time.time()))
        for _ in range(per_tick):
            mid = f"steady-{uuid.uuid4().hex}"
            ids.add(mid)
            e = scheduled(account, mid, int(time.time()) + 2)
            futures.append(await producer.send(p.topic("schedule"), encode(e), key=mid.encode()))
    await asyncio.gather(*futures)
    produced_in = time.time() - started
    await producer.stop()
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        if sum(1 for _, v in out_watch.records if orjson.loads(v)["message_id"] in ids) >= len(ids):
            break
        await asyncio.sleep(0.2)
    dues = [orjson.loads(v) for _, v in due_watch.records]
    lateness = [d["lateness_ms"] / 1000 for d in dues if d["message_id"] in ids]
    outs = [(t, orjson.loads(v)) for t, v in out_watch.records]
    mine = [t for t, d in outs if d["message_id"] in ids and d["type"] == "delivered"]
    await due_watch.stop()
    await out_watch.stop()
    span = (max(mine) - started) if mine else float("nan")
    return {
        "rate_asked": rate,
        "seconds": seconds,
        "produced": len(ids),
        "produced_per_s": len(ids) / produced_in,
        "delivered": len(mine),
        "delivered_per_s": len(mine) / span if mine else None,
        "lateness_p50": pct(lateness, 0.5),
        "lateness_p99": pct(lateness, 0.99),
    }


async def submission(
    p: Pipeline, api_key: str, seconds: float, clients: int = 64
) -> dict[str, Any]:
    """POST /email at ``clients`` concurrent clients for ``seconds``."""
    url = f"http://127.0.0.1:{p.ports['ingest']}/email"
    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        timeout=30, limits=limits, headers={"Authorization": f"Bearer {api_key}"}
    ) as client:

        async def worker() -> None:
            nonlocal errors
            while time.monotonic() < stop_at:
                started = time.monotonic()
                r = await client.post(
                    url,
                    json={
                        "from": "hello@bench.test",
                        "to": "user@example.org",
                        "subject": "b",
                        "text": "x" * 400,
                        "scheduledAt": int(time.time()) + 3600,
                    },
                )
                if r.status_code == 202:
                    latencies.append(time.monotonic() - started)
                else:
                    errors += 1

        began = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.monotonic() - began
    smtp = await smtp_submission(p, api_key, seconds)
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": len(latencies) / elapsed,
        "p50": pct(latencies, 0.5),
        "p99": pct(latencies, 0.99),
        **smtp,
    }


async def smtp_submission(
    p: Pipeline, api_key: str, seconds: float, clients: int = 16
) -> dict[str, Any]:
    """Scheduled messages over SMTP (AUTH, one connection per client, many messages each)."""
    import aiosmtplib

    sent = 0
    errors = 0
    stop_at = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal sent, errors
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=p.ports["smtp"], timeout=30)
        await client.connect()
        await client.login("bench", api_key)
        while time.monotonic() < stop_at:
            data = (
                "From: hello@bench.test\r\nTo: user@example.org\r\nSubject: b\r\n"
                f"X-Scheduled-At: {int(time.time()) + 3600}\r\n\r\n" + "x" * 400
            )
            try:
                await client.sendmail("hello@bench.test", ["user@example.org"], data)
                sent += 1
            except aiosmtplib.SMTPException:
                errors += 1
        await client.quit()

    began = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return {
        "smtp_clients": clients,
        "smtp_messages": sent,
        "smtp_errors": errors,
        "smtp_per_s": sent / (time.monotonic() - began),
    }


async def timer_scale(p: Pipeline, account: str, pending: int) -> dict[str, Any]:
    """RSS and disk per pending schedule, spread over 30 days; recovery after kill -9."""
    rss_before = p.rss("timer")
    now = int(time.time())
    events = [
        scheduled(account, f"scale-{i}", now + 3600 + (i * 2_592_000) // pending)
        for i in range(pending)
    ]
    await inject(p.bootstrap, p.topic("schedule"), events)
    # wait until the timer has consumed everything (its group lag reaches 0)
    consumer = make_consumer(p.bootstrap, p.settings.group("timer"))
    await consumer.start()
    tps = [TopicPartition(p.topic("schedule"), i) for i in range(p.partitions)]
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:
        ends = await consumer.end_offsets(tps)
        committed = [await consumer.committed(tp) or 0 for tp in tps]
        if sum(ends.values()) - sum(committed) < 50 * p.partitions:
            break
        await asyncio.sleep(1)
    await consumer.stop()
    await asyncio.sleep(3)
    rss_after = p.rss("timer")
    disk = sum(f.stat().st_size for f in Path(p.base / "state" / "timer").rglob("*") if f.is_file())
    p.kill("timer", signal.SIGKILL)
    due_watch = TopicWatch(p.bootstrap, p.topic("due"))
    await due_watch.start()
    restarted = time.time()
    p.start("timer")
    healthy_after = time.time() - restarted
    probe = f"probe-{uuid.uuid4().hex}"
    await inject(p.bootstrap, p.topic("schedule"), [scheduled(account, probe, int(time.time()))])
    deadline = time.monotonic() + 600
    first_due = None
    while time.monotonic() < deadline and first_due is None:
        for t, v in due_watch.records:
            if orjson.loads(v)["message_id"] == probe:
                first_due = t - restarted
        await asyncio.sleep(0.1)
    await due_watch.stop()
    return {
        "pending": pending,
        "rss_bytes_per_pending": (rss_after - rss_before) / pending,
        "disk_bytes_per_pending": disk / pending,
        "timer_rss_bytes": rss_after,
        "recovery_healthy_seconds": healthy_after,
        "recovery_first_due_seconds": first_due,
    }


def chart(series: list[tuple[float, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.scatter([s for s, _ in series], [lat for _, lat in series], s=2)
    ax.set_xlabel("seconds after the due second (when the due event arrived)")
    ax.set_ylabel("lateness of the due event (s)")
    ax.set_title("Burst: lateness of due events")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
