"""Integration harness: real Kafka, real SMTP, each service in its own process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import ConsumerRecord
from aiokafka.structs import TopicPartition

from kairos.kafka import follow
from kairos.kafka.clients import (
    make_admin,
    make_consumer,
    make_producer,
    partitions_of_topics,
    start_groupless,
)
from kairos.kafka.local import LocalKafka
from kairos.kafka.topics import apply_topics
from kairos.ports import free_port as _free_port
from kairos.settings import KairosSettings
from kairos.supervisor import ServiceFailed, Supervisor
from schemas.codec import encode
from schemas.events import MessageEvent

pytestmark = pytest.mark.kafka


ADMIN_TOKEN = "adm_integration-tests"


def free_port() -> int:
    return _free_port()


@dataclass
class Stack:
    """Settings for one test's pipeline, and the processes running it (each service as its
    own process under :class:`kairos.supervisor.Supervisor`, as ``kairos up`` runs them)."""

    settings: KairosSettings
    env: dict[str, str]
    outbox: Path
    logs: Path | None = None
    #: the API key of the account ``create_account`` made last (the pipeline's default)
    api_key: str = ""
    account_id: str = ""
    supervisor: Supervisor = field(init=False)

    def __post_init__(self) -> None:
        self.supervisor = Supervisor(self.env, self.logs)

    @property
    def procs(self) -> dict[str, subprocess.Popen[bytes]]:
        return self.supervisor.procs

    def admin(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        """Call the admin API of this stack's ingest."""
        return httpx.request(
            method,
            f"{self.http}/admin{path}",  # type: ignore[arg-type]
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=30,
            **kwargs,
        )

    def create_account(
        self, name: str, domain: str = "example.com", plan: str = "pro", verified: bool = True
    ) -> tuple[str, str]:
        """A new account with a domain; returns (account id, API key)."""
        r = self.admin(
            "POST",
            "/accounts",
            json={"name": name, "domain": domain, "plan": plan, "verified": verified},
        )
        assert r.status_code == 201, r.text
        self.account_id, self.api_key = r.json()["account_id"], r.json()["api_key"]
        return self.account_id, self.api_key

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.settings.http_port}"

    def health_port(self, service: str) -> int:
        return int(self.env[f"_PORT_{service}"])

    def start(self, *services: str, wait: bool = True) -> None:
        """Start services, each as its own process, and wait until each is healthy."""
        for service in services:
            self.start_as(service, service, wait=False)
        if wait:
            for service in services:
                self.wait_healthy(service)

    def start_as(
        self, name: str, service: str, env: dict[str, str] | None = None, wait: bool = True
    ) -> None:
        """Start ``service`` under ``name`` (e.g. a second timer worker ``timer2`` with its
        own state dir, given in ``env``, and its own health port)."""
        if f"_PORT_{name}" not in self.env:
            self.env[f"_PORT_{name}"] = str(free_port())
        extra = dict(env or {})
        if service in ("timer", "validator", "sender"):
            extra.setdefault("KAIROS_HEALTH_PORT", str(self.health_port(name)))
        if service == "sink":
            port = self.settings.sink_port
        elif service == "ingest":
            port = int(extra.get("KAIROS_HTTP_PORT", self.settings.http_port))
        else:
            port = int(extra["KAIROS_HEALTH_PORT"])
        self.supervisor.start(name, service, extra, port)
        if wait:
            self.wait_healthy(name)

    def wait_healthy(self, service: str, timeout: float = 90.0) -> None:
        try:
            self.supervisor.wait_healthy(service, timeout)
        except ServiceFailed as exc:
            raise AssertionError(str(exc)) from exc

    def tail(self, service: str, lines: int = 30) -> str:
        return self.supervisor.tail(service, lines)

    def stop(self, service: str, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        return self.supervisor.stop(service, sig, timeout)

    def stop_all(self) -> None:
        self.supervisor.stop_all(timeout=30)


def own_broker(state_dir: Path, heap: str = "384m") -> LocalKafka:
    """A broker of a test's own (not yet started), on free ports below the ephemeral range:
    for tests that stop, freeze or kill it, which the shared broker must never be."""
    settings = KairosSettings(
        state_dir=state_dir,
        local_kafka_port=free_port(),
        local_kafka_controller_port=free_port(),
        local_kafka_heap=heap,
    )
    return LocalKafka.from_settings(settings)


async def publish(stack: Stack, topic: str, events: Sequence[MessageEvent]) -> None:
    """Write ``events`` (keyed by message id) onto the stack's ``topic`` and wait for the
    broker's acknowledgement of each."""
    producer = make_producer(stack.settings.kafka_bootstrap or "", linger_ms=10)
    await producer.start()
    try:
        futures = [
            await producer.send(
                stack.settings.topic(topic),
                encode(e),
                key=e.message_id.encode(),
            )
            for e in events
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


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
        "KAIROS_ADMIN_TOKEN": ADMIN_TOKEN,
        "KAIROS_SMTP_PORT": str(free_port()),
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
        admin_token=ADMIN_TOKEN,
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
        s.create_account("pipeline")
        yield s
    finally:
        s.stop_all()


def scheduled_email(at: int, **fields: Any) -> dict[str, Any]:
    """A ``POST /email`` body due at ``at`` (unix seconds); ``fields`` replace the defaults
    (``**{"from": ...}`` for the sender)."""
    return {"from": "a@example.com", "to": "u@example.org", "subject": "t", "text": "x",
            "scheduledAt": at, **fields}  # fmt: skip


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


async def read_to_end(
    bootstrap: str, topic: str, timeout: float = 60.0, **consumer_options: Any
) -> list[ConsumerRecord[bytes, bytes]]:
    """:func:`kairos.kafka.follow.read_to_end`, failing the test for a missing topic or a
    timeout."""
    try:
        return await follow.read_to_end(bootstrap, topic, timeout, **consumer_options)
    except (LookupError, TimeoutError) as exc:
        raise AssertionError(str(exc)) from exc


async def read_values_to_end(bootstrap: str, topic: str, timeout: float = 60.0) -> list[bytes]:
    """The values of :func:`read_to_end` (tombstones as ``b""``)."""
    return [r.value or b"" for r in await read_to_end(bootstrap, topic, timeout)]


async def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    """The end offset of each partition of ``topic`` now, once every transaction under way
    has ended (:func:`kairos.kafka.follow.settled_end_offsets`)."""
    consumer = make_consumer(bootstrap, None)
    high = make_consumer(bootstrap, None, isolation_level="read_uncommitted")
    try:
        await start_groupless(consumer)
        await start_groupless(high)
        tps = await partitions_of_topics(consumer, [topic])
        if not tps:
            raise AssertionError(f"no topic {topic}")
        return await follow.settled_end_offsets(consumer, high, tps, 30)
    finally:
        await consumer.stop()
        await high.stop()


async def wait_committed(bootstrap: str, group: str, topic: str, timeout: float = 60.0) -> None:
    """Wait until consumer group ``group`` has committed, on every partition of ``topic``, the
    end offset the partition has at the time of the call: everything written so far is
    handled (a service commits only once a batch's effects are acknowledged)."""
    ends = await end_offsets(bootstrap, topic)
    admin = make_admin(bootstrap)
    await admin.start()
    committed: dict[TopicPartition, int] = {}
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            offsets = await admin.list_consumer_group_offsets(group)
            committed = {tp: offsets[tp].offset for tp in ends if tp in offsets}
            if all(committed.get(tp, 0) >= end for tp, end in ends.items()):
                return
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
    raise AssertionError(f"{group} committed {committed} on {topic}, not {ends}, in {timeout}s")


@pytest.fixture
async def http(pipeline: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=pipeline.http,
        timeout=30,
        headers={"Authorization": f"Bearer {pipeline.api_key}"},
    ) as client:
        yield client


class Watcher:
    """Reads a topic from its beginning in the background, keeping (receive time, value)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.records: list[tuple[float, bytes]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watcher:
        consumer = make_consumer(self.bootstrap, None, self.topic)
        await consumer.start()

        async def run() -> None:
            try:
                while True:
                    batch = await consumer.getmany(timeout_ms=100)
                    now = time.time()
                    for records in batch.values():
                        self.records.extend((now, r.value) for r in records)
            finally:
                await consumer.stop()

        self._task = asyncio.create_task(run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def wait_for(
        self,
        predicate: Callable[[list[tuple[float, bytes]]], bool],
        timeout: float = 60,
        what: str = "",
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.records):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what or 'records'} "
            f"on {self.topic} ({len(self.records)} seen)"
        )
