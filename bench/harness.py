"""Running the pipeline as users do (one process per service) and watching its topics."""

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
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiokafka.structs import TopicPartition

from kairos.kafka.clients import make_consumer
from kairos.kafka.topics import apply_topics
from kairos.settings import KairosSettings

ADMIN_TOKEN = "adm_bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CountingSink:
    """The counting SMTP sink (``bench.sink``), as a process of its own."""

    def __init__(self, port: int, base: Path) -> None:
        self.port, self.file = port, base / "sink-count"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.sink", str(self.port), str(self.file)]
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.1)
        raise RuntimeError("the bench sink did not start")

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


@dataclass
class Pipeline:
    """One isolated pipeline: its own topic prefix, groups, ports and state."""

    bootstrap: str
    partitions: int
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kairos-bench-")))
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.prefix = f"b{uuid.uuid4().hex[:8]}."
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
        }
        self.sink = CountingSink(self.ports["sink"], self.base)

    def topic(self, name: str) -> str:
        return self.settings.topic(name)

    async def prepare(self) -> None:
        await apply_topics(self.settings, self.bootstrap)
        self.sink.start()

    def start(self, *services: str) -> None:
        for service in services:
            env = dict(self.env)
            if service != "ingest":
                env["KAIROS_HEALTH_PORT"] = str(self.ports[service])
            log = open(self.base / f"{service}.log", "ab")  # noqa: SIM115
            self.procs[service] = subprocess.Popen(
                [sys.executable, "-m", "kairos.cli", "run", service],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        for service in services:
            self.wait_healthy(service)

    def wait_healthy(self, service: str, timeout: float = 600) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.procs[service].poll() is not None:
                raise RuntimeError(f"{service} exited; see {self.base / (service + '.log')}")
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(f"http://127.0.0.1:{self.ports[service]}/healthz", timeout=2)
                if r.status_code == 200:
                    return time.monotonic() - started
            time.sleep(0.1)
        raise RuntimeError(f"{service} not healthy after {timeout}s")

    def kill(self, service: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(service)
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def create_account(self) -> tuple[str, str]:
        r = httpx.post(
            f"http://127.0.0.1:{self.ports['ingest']}/admin/accounts",
            timeout=30,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            json={"name": "bench", "plan": "pro", "domain": "bench.test", "verified": True},
        )
        r.raise_for_status()
        return r.json()["account_id"], r.json()["api_key"]

    def rss(self, service: str) -> int:
        pid = self.procs[service].pid
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        for service in list(self.procs):
            self.kill(service)
        self.sink.stop()


class TopicWatch:
    """Consumes a topic from the beginning in the background: (receive time, value)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.records: list[tuple[float, bytes]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = make_consumer(self.bootstrap, None)
        await consumer.start()
        await asyncio.sleep(0)
        cluster = await consumer._client.fetch_all_metadata()
        tps = [
            TopicPartition(self.topic, p)
            for p in sorted(cluster.partitions_for_topic(self.topic) or ())
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)

        async def run() -> None:
            try:
                while True:
                    batch = await consumer.getmany(timeout_ms=100, max_records=5000)
                    now = time.time()
                    for records in batch.values():
                        self.records.extend((now, r.value) for r in records)
            finally:
                await consumer.stop()

        self._task = asyncio.create_task(run())

    async def wait(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.records) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return len(self.records) >= count

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
