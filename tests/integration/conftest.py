"""Integration harness: real Kafka, real SMTP, each service in its own process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from kairos.kafka.clients import make_consumer
from kairos.kafka.topics import apply_topics
from kairos.settings import KairosSettings

pytestmark = pytest.mark.kafka


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    """Settings for one test's pipeline, and the processes running it."""

    settings: KairosSettings
    env: dict[str, str]
    outbox: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: Path | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.settings.http_port}"

    def health_port(self, service: str) -> int:
        return int(self.env[f"_PORT_{service}"])

    def start(self, *services: str) -> None:
        for service in services:
            env = dict(self.env)
            if service in ("timer", "validator", "sender"):
                env["KAIROS_HEALTH_PORT"] = str(self.health_port(service))
            assert self.logs is not None
            log = open(self.logs / f"{service}.log", "ab")  # noqa: SIM115 - closed by the OS
            self.procs[service] = subprocess.Popen(
                [sys.executable, "-m", "kairos.cli", "run", service],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        for service in services:
            self.wait_healthy(service)

    def wait_healthy(self, service: str, timeout: float = 90.0) -> None:
        if service == "sink":
            port = self.settings.sink_port
        elif service == "ingest":
            port = self.settings.http_port
        else:
            port = self.health_port(service)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[service]
            if proc.poll() is not None:
                raise AssertionError(f"{service} exited {proc.returncode}: {self.tail(service)}")
            try:
                if service == "sink":
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        return
                elif httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    return
            except (httpx.HTTPError, OSError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"{service} not healthy in {timeout}s: {self.tail(service)}")

    def tail(self, service: str, lines: int = 30) -> str:
        assert self.logs is not None
        path = self.logs / f"{service}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, service: str, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        proc = self.procs.pop(service)
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def stop_all(self) -> None:
        for service in list(self.procs):
            self.stop(service)


def make_stack(bootstrap: str, base: Path) -> Stack:
    """A fresh, isolated configuration (own topics, groups, ports, state) under ``base``."""
    import uuid

    prefix = f"t{uuid.uuid4().hex[:10]}."
    outbox = base / "outbox"
    logs = base / "logs"
    logs.mkdir(parents=True)
    sink_port = str(free_port())
    env = {
        **os.environ,
        "KAIROS_KAFKA_BOOTSTRAP": bootstrap,
        "KAIROS_TOPIC_PREFIX": prefix,
        "KAIROS_GROUP_PREFIX": prefix.rstrip("."),
        "KAIROS_STATE_DIR": str(base / "state"),
        "KAIROS_HTTP_PORT": str(free_port()),
        "KAIROS_SINK_PORT": sink_port,
        "KAIROS_RELAY_PORT": sink_port,
        "KAIROS_OUTBOX_DIR": str(outbox),
        "KAIROS_TOPIC_PARTITIONS": "2",
        "KAIROS_LOG_LEVEL": "INFO",
    }
    for service in ("timer", "validator", "sender"):
        env[f"_PORT_{service}"] = str(free_port())
    settings = KairosSettings(
        kafka_bootstrap=bootstrap,
        topic_prefix=prefix,
        group_prefix=prefix.rstrip("."),
        state_dir=base / "state",
        http_port=int(env["KAIROS_HTTP_PORT"]),
        sink_port=int(sink_port),
        relay_port=int(sink_port),
        outbox_dir=outbox,
        topic_partitions=2,
    )
    asyncio.run(apply_topics(settings, bootstrap))
    return Stack(settings=settings, env=env, outbox=outbox, logs=logs)


@pytest.fixture
def stack(bootstrap: str, tmp_path: Path) -> Iterator[Stack]:
    """An isolated configuration; the test starts the services it needs."""
    s = make_stack(bootstrap, tmp_path)
    try:
        yield s
    finally:
        s.stop_all()


@pytest.fixture(scope="module")
def pipeline(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole pipeline (sink and four services), shared by one test module."""
    s = make_stack(bootstrap, tmp_path_factory.mktemp("pipeline"))
    try:
        s.start("sink", "ingest", "timer", "validator", "sender")
        yield s
    finally:
        s.stop_all()


async def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[bytes]:
    """Read ``count`` values from the start of ``topic`` (or fewer, when ``timeout`` passes)."""
    consumer = make_consumer(bootstrap, None, topic)
    await consumer.start()
    out: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                out.extend(r.value for r in records)
    finally:
        await consumer.stop()
    return out


@pytest.fixture
async def http(pipeline: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=pipeline.http, timeout=30) as client:
        yield client
