"""The ceiling: what this broker and this machine allow without Kairos.

* Kafka's own ``ProducerPerformance`` and ``ConsumerPerformance`` (from the ``kafka-tools`` jar
  the local broker manager downloads), with the bench's record size and partition count.
* A raw relay: the same messages through as many consume-produce hops as the measured path has
  (timer -> validator -> sender: the burst starts at the schedule stream), each hop a process
  of plain aiokafka (``bench.relay``); one hop alone is the ceiling of each stage alone.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from aiokafka.admin import NewTopic

from bench import cpu
from bench.harness import TopicWatch
from bench.load import paced, produce, spread, thin
from bench.load import rate as rate_of
from kairos.kafka.clients import make_admin
from kairos.kafka.local import LocalKafka
from kairos.settings import KairosSettings
from kairos.supervisor import spawn

#: hops of the measured path: the burst starts at the schedule stream, so
#: schedule -> timer -> due -> validator -> dispatch -> sender -> outcomes is three
HOPS = 3


class KafkaTools:
    """Kafka's command-line tools from the local jar cache (downloaded once; Java 17+)."""

    def __init__(self, settings: KairosSettings, bootstrap: str) -> None:
        local = LocalKafka.from_settings(settings)
        self.classpath = f"{local.ensure_jars()}/*"
        self.java = local.find_java()
        self.bootstrap = bootstrap
        self.last_cpu_ms = 0.0

    def run(self, main: str, *args: str, timeout: float = 600) -> str:
        """Run one of Kafka's tools; its stdout. Its CPU (user + system, the JVM's start
        included) is kept in ``last_cpu_ms``."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            tool = f"org.apache.kafka.tools.{main}"
            proc = subprocess.Popen(
                [self.java, "-Xmx512m", "-cp", self.classpath, tool, *args],
                stdout=out,
                stderr=err,
            )
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            self.last_cpu_ms = (usage.ru_utime + usage.ru_stime) * 1000
            out.seek(0)
            err.seek(0)
            stdout, stderr = (
                out.read().decode(errors="replace"),
                err.read().decode(errors="replace"),
            )
        if proc.returncode != 0:
            raise RuntimeError(f"{main} failed: {(stderr or stdout)[-500:]}")
        return stdout

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
        return {**parse_producer_perf(out), "cpu_ms": self.last_cpu_ms}

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
    # one record first: the JVM's start-up and the client's set-up, taken off the CPU figure
    once = await asyncio.to_thread(tools.producer_perf, topic, 1, size)
    producer = await asyncio.to_thread(tools.producer_perf, topic, records, size)
    consumer = await asyncio.to_thread(tools.consumer_perf, topic, records + 1)
    return {
        "records": records,
        "record_bytes": size,
        "producer": producer,
        "consumer": consumer,
        "producer_fixed_cpu_ms": once["cpu_ms"],
        "producer_ms_per_1000": marginal_ms_per_1000(once["cpu_ms"], producer["cpu_ms"], records),
    }


def marginal_ms_per_1000(fixed_ms: float, total_ms: float, records: int) -> float | None:
    """CPU per 1,000 records of a run of ``records`` that cost ``total_ms``, without the
    ``fixed_ms`` a run of one record costs (the JVM's start-up): the marginal cost."""
    if records <= 1:
        return None
    return max(0.0, total_ms - fixed_ms) * 1000 / (records - 1)


class Arrival(NamedTuple):
    received: float
    key: str


class RawRelay:
    """``hops`` relay processes chained over ``hops + 1`` topics of ``partitions``.

    Its input is written before its clock starts and its clock starts at a whole second given
    in advance (each hop waits for it, see ``bench.relay``), as the pipeline's burst starts at
    the due second with the timer already holding its input."""

    def __init__(
        self,
        bootstrap: str,
        prefix: str,
        partitions: int,
        rf: int,
        hops: int = HOPS,
        broker_pid: int | None = None,
    ) -> None:
        self.bootstrap, self.partitions, self.rf, self.hops = bootstrap, partitions, rf, hops
        self.broker_pid = broker_pid
        self.topics = [f"{prefix}-{i}" for i in range(hops + 1)]
        self.base = Path(tempfile.mkdtemp(prefix="kairos-bench-relay-"))
        self.go = self.base / "go"
        self.procs: list[subprocess.Popen[bytes]] = []

    async def start(self) -> None:
        await create_topics(self.bootstrap, self.topics, self.partitions, self.rf)
        for i in range(self.hops):
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
                        str(self.go),
                    ],
                    log=self.base / f"hop-{i}.log",
                )
            )
        deadline = time.monotonic() + 120
        while not all((self.base / f"ready-{i}").exists() for i in range(self.hops)):
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

    def pids(self) -> dict[str, int | None]:
        out: dict[str, int | None] = {f"relay hop {i + 1}": p.pid for i, p in enumerate(self.procs)}
        out["broker"] = self.broker_pid
        out["bench"] = os.getpid()
        return out

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
        """All ``records`` written to the first topic, then the hops started at the next whole
        second but one (the clock): from it to the last arrival after the last hop. The CPU
        of each hop, of the broker and of the bench is read at the clock's start and at the
        last arrival."""
        watch = self.watch(tag)
        await watch.start()
        inject = await produce(self.bootstrap, self.topics[0], records)
        clock = math.ceil(time.time()) + 1
        self.go.write_text(str(clock))
        await asyncio.sleep(max(0.0, clock - time.time()))
        window = cpu.Window(self.pids()).start()
        n = len(records)
        complete = await watch.until(lambda: len({a.key for a in watch.seen}) >= n, deadline)
        used = window.stop()
        await watch.stop()
        arrivals = [a.received - clock for a in watch.seen]
        unique = len({a.key for a in watch.seen})
        seconds = max(arrivals, default=time.time() - clock)
        hop_ms = [used[k] for k in used if k.startswith("relay hop")]
        hop_per = [cpu.per_thousand(ms, n) for ms in hop_ms]
        known = [x for x in hop_per if x is not None]
        return {
            "n": n,
            "hops": self.hops,
            "arrived": unique,
            "duplicates": len(arrivals) - unique,
            "complete": complete,
            "inject_seconds": inject,
            "seconds": seconds,
            "per_s": unique / seconds if seconds > 0 else None,
            "arrivals": thin(sorted(arrivals)),
            "cpu_ms": used,
            "ms_per_1000": {
                "relay hop": sum(known) / len(known) if known else None,
                "broker": cpu.per_thousand(used.get("broker"), n),
                "bench": cpu.per_thousand(used.get("bench"), n),
                **{k: cpu.per_thousand(v, n) for k, v in used.items()},
            },
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
