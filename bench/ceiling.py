"""The ceiling: what this broker and this machine allow without Kairos.

* Kafka's own ``ProducerPerformance`` and ``ConsumerPerformance`` (from the ``kafka-tools`` jar
  the local broker manager downloads), with the bench's record size and partition count.
* A raw relay: the same messages through as many consume-produce hops as the pipeline has
  (ingest -> timer -> validator -> sender), each hop a process of plain aiokafka (``bench.relay``).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from aiokafka.admin import NewTopic

from bench.harness import TopicWatch, spawn
from bench.load import paced, produce, spread, thin
from bench.load import rate as rate_of
from kairos.kafka.clients import make_admin
from kairos.kafka.local import LocalKafka
from kairos.settings import KairosSettings

#: hops of the pipeline: ingest -> schedule -> timer -> due -> validator -> dispatch -> sender
HOPS = 4


class KafkaTools:
    """Kafka's command-line tools from the local jar cache (downloaded once; Java 17+)."""

    def __init__(self, settings: KairosSettings, bootstrap: str) -> None:
        local = LocalKafka.from_settings(settings)
        self.classpath = f"{local.ensure_jars()}/*"
        self.java = local.find_java()
        self.bootstrap = bootstrap

    def run(self, main: str, *args: str, timeout: float = 600) -> str:
        done = subprocess.run(
            [self.java, "-Xmx512m", "-cp", self.classpath, f"org.apache.kafka.tools.{main}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{main} failed: {(done.stderr or done.stdout)[-500:]}")
        return done.stdout

    def producer_perf(self, topic: str, records: int, size: int) -> dict[str, Any]:
        out = self.run(
            "ProducerPerformance",
            "--topic",
            topic,
            "--num-records",
            str(records),
            "--record-size",
            str(size),
            "--throughput",
            "-1",
            "--producer-props",
            f"bootstrap.servers={self.bootstrap}",
            "acks=all",
            "enable.idempotence=true",
        )
        return parse_producer_perf(out)

    def consumer_perf(self, topic: str, records: int) -> dict[str, Any]:
        out = self.run(
            "ConsumerPerformance",
            "--bootstrap-server",
            self.bootstrap,
            "--topic",
            topic,
            "--messages",
            str(records),
            "--timeout",
            "60000",
        )
        return parse_consumer_perf(out)

    def topic_bytes(self, topics: Sequence[str]) -> dict[str, int]:
        """Bytes on disk of one copy of each topic (the largest replica of each partition)."""
        out = self.run(
            "LogDirsCommand",
            "--bootstrap-server",
            self.bootstrap,
            "--describe",
            "--topic-list",
            ",".join(topics),
        )
        return parse_log_dirs(out, topics)


def parse_producer_perf(out: str) -> dict[str, Any]:
    """The summary line of ProducerPerformance: records/s, MB/s and latencies (ms)."""
    last = [line for line in out.splitlines() if "records sent" in line][-1:]
    text = last[0] if last else ""

    def num(pattern: str) -> float | None:
        m = re.search(pattern, text)
        return float(m.group(1)) if m else None

    return {
        "records_per_s": num(r"([\d.]+) records/sec"),
        "mb_per_s": num(r"\(([\d.]+) MB/sec\)"),
        "latency_avg_ms": num(r"([\d.]+) ms avg latency"),
        "latency_p50_ms": num(r"(\d+) ms 50th"),
        "latency_p99_ms": num(r"(\d+) ms 99th"),
    }


def parse_consumer_perf(out: str) -> dict[str, Any]:
    """ConsumerPerformance's CSV: records/s over the whole run and over fetching alone."""
    lines = [line for line in out.splitlines() if line.strip()]
    header = next((line for line in lines if line.startswith("start.time")), None)
    rows = [line for line in lines if line[:1].isdigit()]
    if header is None or not rows:
        return {"records_per_s": None, "fetch_records_per_s": None}
    row = dict(zip([h.strip() for h in header.split(",")], rows[-1].split(","), strict=False))
    return {
        "records_per_s": float(row.get("nMsg.sec", "nan")),
        "fetch_records_per_s": float(row.get("fetch.nMsg.sec", "nan")),
        "mb_per_s": float(row.get("MB.sec", "nan")),
    }


def parse_log_dirs(out: str, topics: Sequence[str]) -> dict[str, int]:
    line = next((x for x in out.splitlines() if x.startswith("{")), "{}")
    biggest: dict[str, int] = {}
    for broker in json.loads(line).get("brokers", []):
        for log_dir in broker.get("logDirs", []):
            for part in log_dir.get("partitions", []):
                name = part["partition"]
                biggest[name] = max(biggest.get(name, 0), int(part["size"]))
    sizes = dict.fromkeys(topics, 0)
    for name, size in biggest.items():
        topic = name.rsplit("-", 1)[0]
        if topic in sizes:
            sizes[topic] += size
    return sizes


async def create_topics(bootstrap: str, names: Sequence[str], partitions: int, rf: int) -> None:
    admin = make_admin(bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, rf) for n in names])
    finally:
        await admin.close()
    await asyncio.sleep(1)


async def kafka_perf(
    tools: KafkaTools, prefix: str, partitions: int, rf: int, records: int, size: int
) -> dict[str, Any]:
    """ProducerPerformance then ConsumerPerformance on a fresh topic of ``partitions``."""
    topic = f"{prefix}perf"
    await create_topics(tools.bootstrap, [topic], partitions, rf)
    producer = await asyncio.to_thread(tools.producer_perf, topic, records, size)
    consumer = await asyncio.to_thread(tools.consumer_perf, topic, records)
    return {"records": records, "record_bytes": size, "producer": producer, "consumer": consumer}


class Arrival(NamedTuple):
    received: float
    key: str


class RawRelay:
    """``HOPS`` relay processes chained over ``HOPS + 1`` topics of ``partitions``."""

    def __init__(self, bootstrap: str, prefix: str, partitions: int, rf: int) -> None:
        self.bootstrap, self.partitions, self.rf = bootstrap, partitions, rf
        self.topics = [f"{prefix}relay-{i}" for i in range(HOPS + 1)]
        self.base = Path(tempfile.mkdtemp(prefix="kairos-bench-relay-"))
        self.procs: list[subprocess.Popen[bytes]] = []

    async def start(self) -> None:
        await create_topics(self.bootstrap, self.topics, self.partitions, self.rf)
        for i in range(HOPS):
            self.procs.append(
                spawn(
                    [
                        sys.executable,
                        "-m",
                        "bench.relay",
                        self.bootstrap,
                        self.topics[i],
                        self.topics[i + 1],
                        f"{self.topics[i]}-hop",
                        str(self.base / f"ready-{i}"),
                    ],
                    log=self.base / f"hop-{i}.log",
                )
            )
        deadline = time.monotonic() + 120
        while not all((self.base / f"ready-{i}").exists() for i in range(HOPS)):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"the relay hops did not start; see {self.base}")
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()

    def watch(self, tag: str) -> TopicWatch:
        """Arrivals after the last hop of the records whose key starts with ``tag``."""
        return TopicWatch(
            self.bootstrap,
            self.topics[-1],
            tag,
            parse=lambda t, k, v: Arrival(t, (k or b"").decode()),
        )

    async def burst(
        self, records: Sequence[tuple[bytes, bytes]], tag: str, deadline: float
    ) -> dict[str, Any]:
        """All ``records`` at once: first produce to last arrival after the last hop."""
        watch = self.watch(tag)
        await watch.start()
        started = time.time()
        inject = await produce(self.bootstrap, self.topics[0], records)
        n = len(records)
        complete = await watch.until(lambda: len(watch.seen) >= n, deadline)
        await watch.stop()
        arrivals = [a.received - started for a in watch.seen]
        seconds = max(arrivals, default=time.time() - started)
        return {
            "n": n,
            "arrived": len(arrivals),
            "complete": complete,
            "inject_seconds": inject,
            "seconds": seconds,
            "per_s": len(arrivals) / seconds if seconds > 0 else None,
            "arrivals": thin(sorted(arrivals)),
        }

    async def steady(
        self, rate: int, seconds: float, payload: bytes, tag: str, drain: float
    ) -> dict[str, Any]:
        """``rate`` records per second for ``seconds``: latency from send to arrival after the
        last hop (a record that did not arrive within ``drain`` seconds counts as unbounded)."""
        watch = self.watch(tag)
        await watch.start()
        sent = await paced(
            self.bootstrap, self.topics[0], rate, seconds, lambda mid: (mid.encode(), payload), tag
        )
        produced_for = time.time() - min(sent.values())
        await watch.until(lambda: len(watch.seen) >= len(sent), time.monotonic() + drain)
        await watch.stop()
        arrived = {a.key: a.received for a in watch.seen}
        latency = [arrived.get(mid, float("inf")) - at for mid, at in sent.items()]
        return {
            "rate_asked": rate,
            "seconds": seconds,
            "sent": len(sent),
            "sent_per_s": len(sent) / produced_for,
            "arrived": len(arrived),
            "per_s": rate_of(sorted(arrived.values())),
            "latency": spread(latency),
        }
