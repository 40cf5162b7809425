"""Running the pipeline as users do (one process per service) and watching its topics.

Every process the bench starts dies with it (``PR_SET_PDEATHSIG``): a bench that is killed
leaves no service behind spinning against a broker that may be gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import httpx
import orjson

from kairos.kafka.clients import (
    make_admin,
    make_consumer,
    partitions_of_topics,
    start_groupless,
)
from kairos.kafka.topics import apply_topics
from kairos.ports import free_port as _free_port
from kairos.settings import KairosSettings
from kairos.supervisor import Supervisor, spawn

if TYPE_CHECKING:
    from bench.mta import SmtpSink

ADMIN_TOKEN = "adm_bench"


def free_port() -> int:
    return _free_port()


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


def rss_of(pid: int) -> int:
    """Resident set size of a process, in bytes (Linux ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def dir_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (0 when it does not exist)."""
    total = 0
    for f in path.rglob("*"):
        with contextlib.suppress(OSError):
            if f.is_file():
                total += f.stat().st_size
    return total


class Broker(NamedTuple):
    """The broker as the bench sees it: its process (None when it runs elsewhere) and its
    ``log.dirs`` (None when unknown)."""

    pid: int | None
    data_dir: Path | None


def local_broker(settings: KairosSettings) -> Broker:
    """The local broker of ``settings`` (kairos.kafka.local), or nothing known when
    ``KAIROS_KAFKA_BOOTSTRAP`` names a cluster elsewhere."""
    if settings.kafka_bootstrap:
        return Broker(None, None)
    from kairos.kafka.local import LocalKafka

    status = LocalKafka.from_settings(settings).status()
    return Broker(status.pid, status.data_dir)


def log_bytes(data_dir: Path | None, prefix: str) -> dict[str, int] | None:
    """Bytes of the log segments (``*.log``, the records; indexes are preallocated) of every
    topic whose name starts with ``prefix``, summed over its partitions' directories in the
    broker's ``data_dir``; None when the data dir is not known."""
    if data_dir is None or not data_dir.is_dir():
        return None
    sizes: dict[str, int] = {}
    for d in data_dir.iterdir():
        if not d.name.startswith(prefix) or not d.is_dir():
            continue
        topic = d.name.rsplit("-", 1)[0]
        total = 0
        for f in d.glob("*.log"):
            with contextlib.suppress(OSError):
                total += f.stat().st_size
        sizes[topic] = sizes.get(topic, 0) + total
    return sizes


class CountingSink:
    """The counting SMTP sink (``bench.sink``), as a process of its own."""

    def __init__(self, port: int, base: Path) -> None:
        self.port, self.file = port, base / "sink-count"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = spawn([sys.executable, "-m", "bench.sink", str(self.port), str(self.file)])
        wait_port(self.port)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def count(self) -> int:
        try:
            return int(self.file.read_text() or 0)
        except (OSError, ValueError):
            return 0

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@dataclass
class Pipeline:
    """One isolated pipeline: its own topic prefix, consumer groups, ports and state dir."""

    bootstrap: str
    partitions: int
    prefix: str
    #: the SMTP relay: "postfix" (smtp-sink, C, discards) or "python" (bench.sink, counts)
    relay: str = "python"
    extra_env: dict[str, str] = field(default_factory=dict)
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kairos-bench-")))

    def __post_init__(self) -> None:
        self.ports = {
            s: free_port() for s in ("ingest", "smtp", "timer", "validator", "sender", "sink")
        }
        self.settings = KairosSettings(
            kafka_bootstrap=self.bootstrap,
            topic_prefix=self.prefix,
            group_prefix=self.prefix.rstrip("."),
            topic_partitions=self.partitions,
            state_dir=self.base / "state",
        )
        self.env = {
            **os.environ,
            "KAIROS_KAFKA_BOOTSTRAP": self.bootstrap,
            "KAIROS_TOPIC_PREFIX": self.prefix,
            "KAIROS_GROUP_PREFIX": self.prefix.rstrip("."),
            "KAIROS_TOPIC_PARTITIONS": str(self.partitions),
            "KAIROS_STATE_DIR": str(self.base / "state"),
            "KAIROS_HTTP_PORT": str(self.ports["ingest"]),
            "KAIROS_SMTP_PORT": str(self.ports["smtp"]),
            "KAIROS_RELAY_PORT": str(self.ports["sink"]),
            "KAIROS_ADMIN_TOKEN": ADMIN_TOKEN,
            "KAIROS_LOG_LEVEL": "WARNING",
            # as the StatefulSet names its pods: a restarted timer takes its partitions back
            "KAIROS_TIMER_INSTANCE_ID": f"{self.prefix}timer-0",
            **self.extra_env,
        }
        self.supervisor = Supervisor(self.env, self.base)
        from bench.mta import SmtpSink  # bench.mta uses this module's spawn

        self.sink: CountingSink | SmtpSink = (
            SmtpSink(self.ports["sink"], self.base)
            if self.relay == "postfix"
            else CountingSink(self.ports["sink"], self.base)
        )

    def topic(self, name: str) -> str:
        return self.settings.topic(name)

    @property
    def timer_state_dir(self) -> Path:
        return self.base / "state" / "timer"

    async def prepare(self) -> None:
        """Create this pipeline's topics and start its SMTP sink."""
        await apply_topics(self.settings, self.bootstrap)
        self.sink.start()

    @property
    def procs(self) -> dict[str, subprocess.Popen[bytes]]:
        return self.supervisor.procs

    def start(self, *services: str) -> None:
        """Start services, each as ``python -m services.<service>``; wait until healthy."""
        for service in services:
            env = {} if service == "ingest" else {"KAIROS_HEALTH_PORT": str(self.ports[service])}
            self.supervisor.start(service, env=env, port=self.ports[service])
        for service in services:
            self.wait_healthy(service)

    def wait_healthy(self, service: str, timeout: float = 300) -> float:
        """Seconds until ``/healthz`` of ``service`` answers 200."""
        return self.supervisor.wait_healthy(service, timeout)

    def kill(self, service: str, sig: int = signal.SIGTERM) -> None:
        self.supervisor.stop(service, sig, timeout=15)

    def create_account(self) -> tuple[str, str]:
        """A pro account with a verified domain ``bench.test``: (account id, API key)."""
        r = httpx.post(
            f"http://127.0.0.1:{self.ports['ingest']}/admin/accounts",
            timeout=30,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            json={"name": "bench", "plan": "pro", "domain": "bench.test", "verified": True},
        )
        r.raise_for_status()
        return r.json()["account_id"], r.json()["api_key"]

    def pids(self, broker: Broker | None = None) -> dict[str, int | None]:
        """The processes whose CPU the bench reads: the services, the sink, the broker (when
        local) and the bench itself (the load generator)."""
        out: dict[str, int | None] = {s: p.pid for s, p in self.procs.items()}
        out["sink"] = self.sink.pid
        out["broker"] = broker.pid if broker else None
        out["bench"] = os.getpid()
        return out

    def pause(self, service: str) -> None:
        """SIGSTOP a service (its input piles up while it is stopped)."""
        self.supervisor.send(service, signal.SIGSTOP)

    def resume(self, service: str) -> None:
        self.supervisor.send(service, signal.SIGCONT)

    def rss(self, service: str) -> int:
        return rss_of(self.procs[service].pid)

    def stop(self) -> None:
        for service in list(self.procs):
            self.kill(service)
        self.sink.stop()


async def group_lag(bootstrap: str, group: str, topic: str) -> tuple[int, dict[int, int]]:
    """(total lag, committed offset per partition) of consumer group ``group`` on ``topic``."""
    admin = make_admin(bootstrap)
    consumer = make_consumer(bootstrap, None)
    await admin.start()
    await start_groupless(consumer)
    try:
        committed = await admin.list_consumer_group_offsets(group)
        tps = await partitions_of_topics(consumer, [topic])
        ends = await consumer.end_offsets(tps)
        done = {tp.partition: committed[tp].offset if tp in committed else 0 for tp in tps}
        return sum(ends[tp] - done[tp.partition] for tp in tps), done
    finally:
        await consumer.stop()
        await admin.close()


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = make_consumer(bootstrap, None)
    await start_groupless(consumer)
    try:
        tps = await partitions_of_topics(consumer, [topic])
        return {tp.partition: off for tp, off in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def wait_consumed(
    bootstrap: str, group: str, topic: str, ends: dict[int, int], deadline: float
) -> float | None:
    """Wait until ``group`` has committed at least ``ends`` on every partition of ``topic``;
    the wall-clock time it was seen (None when ``deadline``, a monotonic time, came first)."""
    while time.monotonic() < deadline:
        _, done = await group_lag(bootstrap, group, topic)
        if all(done.get(p, 0) >= off for p, off in ends.items()):
            return time.time()
        await asyncio.sleep(0.5)
    return None


class Seen(NamedTuple):
    """One event as the bench saw it: when it arrived and what it says about time."""

    received: float  # wall-clock time the bench's consumer got it
    message_id: str
    type: str
    due_at: int
    at: float | None  # Due: emitted_at; Delivered: delivered_at; otherwise None
    reason: str | None  # Failed: its reason code


def _stamp(value: Any) -> float | None:
    return datetime.fromisoformat(value).timestamp() if isinstance(value, str) else None


def parse_event(received: float, key: bytes | None, value: bytes) -> Seen:
    d = orjson.loads(value)
    kind = d.get("type", "")
    at = _stamp(d.get("emitted_at") if kind == "due" else d.get("delivered_at"))
    return Seen(received, d.get("message_id", ""), kind, d.get("due_at", 0), at, d.get("reason"))


class TopicWatch:
    """Consumes a topic from the beginning in the background and keeps, decoded, the events
    whose message id starts with ``prefix`` (so waiting for a count costs nothing)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        prefix: str = "",
        parse: Callable[[float, bytes | None, bytes], Any] = parse_event,
    ) -> None:
        self.bootstrap, self.topic, self.prefix, self.parse = bootstrap, topic, prefix, parse
        self.seen: list[Any] = []
        #: events seen by type (for parse_event's Seen), duplicates included
        self.counts: Counter[str] = Counter()
        #: message ids seen by type, and the ids that got an outcome that ends their story
        self.ids: dict[str, set[str]] = {}
        self.settled: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = make_consumer(self.bootstrap, None)
        await start_groupless(consumer)
        tps = await partitions_of_topics(consumer, [self.topic])
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        marker = self.prefix.encode()

        async def run() -> None:
            try:
                while True:
                    batch = await consumer.getmany(timeout_ms=50, max_records=10_000)
                    now = time.time()
                    for records in batch.values():
                        for r in records:
                            if r.key is None or r.key.startswith(marker):
                                item = self.parse(now, r.key, r.value)
                                self.seen.append(item)
                                kind = getattr(item, "type", "")
                                self.counts[kind] += 1
                                mid = getattr(item, "message_id", None)
                                if mid is not None:
                                    self.ids.setdefault(kind, set()).add(mid)
                                    if kind in ("delivered", "failed"):
                                        self.settled.add(mid)
            finally:
                await consumer.stop()

        self._task = asyncio.create_task(run())

    def terminal(self) -> int:
        """Messages (unique ids) whose story has ended (delivered or failed) so far."""
        return len(self.settled)

    def unique(self, kind: str) -> int:
        """Unique message ids seen with events of ``kind``."""
        return len(self.ids.get(kind, ()))

    @staticmethod
    async def until(done: Callable[[], bool], deadline: float) -> bool:
        """Wait until ``done()`` or the monotonic ``deadline``; whether it was done."""
        while time.monotonic() < deadline:
            if done():
                return True
            await asyncio.sleep(0.05)
        return done()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@contextlib.asynccontextmanager
async def running(
    bootstrap: str,
    partitions: int,
    prefix: str,
    *services: str,
    relay: str = "python",
    env: dict[str, str] | None = None,
) -> AsyncIterator[Pipeline]:
    """A fresh pipeline with ``services`` running, relaying to ``relay`` (see Pipeline);
    stopped on the way out."""
    p = Pipeline(bootstrap, partitions, prefix, relay, env or {})
    await p.prepare()
    try:
        p.start(*services)
        yield p
    finally:
        p.stop()


async def delete_topics(bootstrap: str, prefixes: Sequence[str]) -> int:
    """Delete every topic whose name starts with one of ``prefixes``; how many there were."""
    admin = make_admin(bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(tuple(prefixes))]
        for i in range(0, len(names), 50):
            await admin.delete_topics(names[i : i + 50])
        return len(names)
    finally:
        await admin.close()
