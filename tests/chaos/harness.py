"""The fault suite's machinery: a load generator, faults, a health monitor and a checker that
proves, by unique message id, that nothing accepted was lost, delivered early or twice, and that
nothing refused was delivered.

A trial (:func:`run_trial`) drives a real pipeline (the integration tests' :class:`Stack`: sink,
ingest, timer, validator and sender, each its own process) on a broker of its own
(:class:`LocalKafka`), submits mail over HTTP at a steady rate (most of it scheduled a few
seconds ahead, so mail is falling due while the fault lasts), injects one fault, keeps the load
on during and after it, then waits (polling the checker, with a deadline) until every accepted
message is settled, and returns a :class:`Report`.

What is read, to check:

* every answer the load generator got (``201``/``202`` with the message id; ``503`` and any other
  refusal; no answer at all), each submission carrying a unique token in its ``Subject``;
* ``kairos.schedule``, ``kairos.due``, ``kairos.dispatch`` and ``kairos.outcomes`` under the
  stack's topic prefix, from their beginning;
* the dev sink's outbox (one ``.eml`` per message received, named ``<unix time>-<rand>.eml``,
  its ``Message-ID`` being ``<message id@domain>`` as ingest composed it, its ``Subject`` the
  token);
* ``/healthz`` of every service, polled every 0.25 s, and whether any process exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import TopicPartition

from kairos.kafka.clients import make_consumer
from kairos.kafka.local import LocalKafka
from tests.integration.conftest import Stack, make_stack

#: the services of a pipeline, in the order they are started (and killed in turn)
SERVICES = ("ingest", "timer", "validator", "sender")
#: everything the monitor watches
WATCHED = ("sink", *SERVICES)
#: outcome types that settle a message
TERMINAL = frozenset({"delivered", "failed", "cancelled"})

_SUBJECT = re.compile(rb"^Subject: chaos ([0-9a-f]{32})\r?$", re.M)
_MESSAGE_ID = re.compile(rb"^Message-ID: <([0-9a-f-]{36})@", re.M | re.I)


# -- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialConfig:
    """How hard and how long a trial pushes."""

    #: submissions per second offered
    rate: float = 20.0
    #: share of submissions sent without ``scheduledAt`` (delivered at once)
    immediate_share: float = 0.2
    #: scheduled ones are due this many seconds ahead (inclusive range)
    ahead: tuple[int, int] = (3, 8)
    #: the pipeline must have delivered this many messages before the fault (proves it flows)
    warmup_deliveries: int = 20
    #: load before the fault, once warm
    before_seconds: float = 5.0
    #: load after the fault has ended
    after_seconds: float = 10.0
    #: outage length of the broker faults (stopped / frozen)
    outage_seconds: float = 20.0
    #: how long a killed service stays down before it is started again
    killed_seconds: float = 3.0
    #: after the load stops, the deadline for every accepted message to settle
    drain_timeout: float = 60.0
    #: after the fault ends, the deadline for every service to answer /healthz 200 again
    health_timeout: float = 90.0
    #: requests in flight at most (beyond that a submission is shed, not queued)
    max_in_flight: int = 64
    #: HTTP timeout of one submission
    request_timeout: float = 30.0


def long_trials() -> bool:
    """Whether the full trials were asked for (``make chaos``: ``KAIROS_CHAOS=long``)."""
    return os.environ.get("KAIROS_CHAOS", "").lower() == "long"


# -- load --------------------------------------------------------------------------------------


@dataclass
class Submission:
    """One ``POST /email`` and what it was answered."""

    token: str
    sent_at: float
    scheduled: bool
    status: int | None = None  # None: no answer (timeout, connection refused or reset)
    message_id: str | None = None
    due_at: int | None = None
    code: str = ""
    error: str = ""
    answered_at: float | None = None


class LoadGenerator:
    """Submits at a steady rate; each submission has a unique token in its Subject."""

    def __init__(self, url: str, api_key: str, config: TrialConfig) -> None:
        self.url, self.api_key, self.config = url, api_key, config
        self.submissions: list[Submission] = []
        self.shed = 0  # not offered: too many requests already in flight
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        interval = 1.0 / self.config.rate
        limits = httpx.Limits(
            max_connections=self.config.max_in_flight, max_keepalive_connections=16
        )
        async with httpx.AsyncClient(
            base_url=self.url,
            timeout=self.config.request_timeout,
            limits=limits,
            headers={"Authorization": f"Bearer {self.api_key}"},
        ) as client:
            next_at = time.monotonic()
            while not stop.is_set():
                if len(self._tasks) >= self.config.max_in_flight:
                    self.shed += 1
                else:
                    task = asyncio.create_task(self._submit(client))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                next_at += interval
                delay = next_at - time.monotonic()
                if delay < -1.0:  # fell behind (a stalled loop): do not burst to catch up
                    next_at = time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, delay))
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _submit(self, client: httpx.AsyncClient) -> None:
        scheduled = random.random() >= self.config.immediate_share
        sub = Submission(token=uuid.uuid4().hex, sent_at=time.time(), scheduled=scheduled)
        self.submissions.append(sub)
        body: dict[str, Any] = {
            "from": "Chaos <hello@example.com>",
            "to": "user@example.org",
            "subject": f"chaos {sub.token}",
            "text": f"fault suite message {sub.token}",
        }
        if scheduled:
            body["scheduledAt"] = int(sub.sent_at) + random.randint(*self.config.ahead)
        try:
            r = await client.post("/email", json=body)
        except httpx.HTTPError as exc:
            sub.error = f"{type(exc).__name__}: {exc}"[:200]
            return
        sub.answered_at, sub.status = time.time(), r.status_code
        try:
            payload = r.json()
        except ValueError:
            payload = {}
        if r.status_code in (201, 202):
            sub.message_id = payload["id"]
            sub.due_at = payload.get("scheduled_at")
        else:
            sub.code = str((payload.get("error") or {}).get("code", "")) if payload else ""


# -- health ------------------------------------------------------------------------------------


class HealthMonitor:
    """Polls every service's health and process; keeps, per service, when it last became
    healthy, and which processes exited without being killed on purpose."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.healthy: dict[str, bool] = {}
        #: monotonic time each service last turned healthy (from unhealthy or unknown)
        self.became_healthy: dict[str, float] = {}
        self.unhealthy_seconds: dict[str, float] = defaultdict(float)
        self.transitions: list[tuple[float, str, bool]] = []
        #: processes killed on purpose (by pid)
        self.killed: set[int] = set()
        self.exits: dict[str, str] = {}

    def _port(self, service: str) -> int:
        if service == "sink":
            return self.stack.settings.sink_port
        if service == "ingest":
            return self.stack.settings.http_port
        return self.stack.health_port(service)

    async def _probe(self, client: httpx.AsyncClient, service: str) -> bool:
        port = self._port(service)
        try:
            if service == "sink":
                _r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
                w.close()
                return True
            r = await client.get(f"http://127.0.0.1:{port}/healthz")
            return r.status_code == 200
        except (httpx.HTTPError, OSError, TimeoutError):
            return False

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=1.0) as client:
            last = time.monotonic()
            while not stop.is_set():
                now = time.monotonic()
                results = await asyncio.gather(*(self._probe(client, s) for s in WATCHED))
                for service, ok in zip(WATCHED, results, strict=True):
                    if not ok:
                        self.unhealthy_seconds[service] += now - last
                    if self.healthy.get(service) != ok:
                        self.transitions.append((time.time(), service, ok))
                        if ok:
                            self.became_healthy[service] = time.monotonic()
                    self.healthy[service] = ok
                self.check_exits()
                last = now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.25)

    def check_exits(self) -> None:
        for name, proc in list(self.stack.procs.items()):
            code = proc.poll()
            if code is not None and proc.pid not in self.killed and name not in self.exits:
                self.exits[name] = f"exited {code} (pid {proc.pid})"

    def all_healthy(self) -> bool:
        return all(self.healthy.get(s) for s in WATCHED)


# -- faults ------------------------------------------------------------------------------------


@dataclass
class FaultLog:
    """What a fault did, when (monotonic), for the report."""

    name: str
    started: float = 0.0
    ended: float = 0.0
    #: the same, as unix time (submissions are stamped with it)
    ended_wall: float = 0.0
    #: per service, the monotonic time from which it has to be healthy again (fault end, or its
    #: restart after it was killed)
    recover_from: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


Fault = Callable[["Trial"], Awaitable[None]]


def broker_pid(broker: LocalKafka) -> int:
    return int(broker.pid_file.read_text().strip())


async def broker_stopped(trial: Trial) -> None:
    """(a) The broker stopped (SIGTERM, clean) for ``outage_seconds``, then started again."""
    broker, log = trial.broker, trial.fault
    took = time.monotonic()
    await asyncio.to_thread(broker.stop)
    log.notes.append(f"broker stopped in {time.monotonic() - took:.1f}s")
    await asyncio.sleep(trial.config.outage_seconds)  # the fault's length, not a wait for work
    took = time.monotonic()
    await asyncio.to_thread(broker.start)
    log.notes.append(f"broker answering again {time.monotonic() - took:.1f}s after its start")


async def broker_frozen(trial: Trial) -> None:
    """(b) The broker frozen with SIGSTOP for ``outage_seconds``, then SIGCONT."""
    pid = broker_pid(trial.broker)
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(trial.config.outage_seconds)
    finally:
        os.kill(pid, signal.SIGCONT)
    trial.fault.notes.append(f"broker pid {pid} stopped and continued")


async def broker_killed(trial: Trial) -> None:
    """(d) The broker killed with SIGKILL, then started again at once."""
    pid = broker_pid(trial.broker)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    took = time.monotonic()
    await asyncio.to_thread(trial.broker.start)
    trial.fault.notes.append(
        f"broker pid {pid} killed; answering again {time.monotonic() - took:.1f}s after its start"
    )


async def services_killed(trial: Trial) -> None:
    """(c) Each service in turn killed with SIGKILL, down for ``killed_seconds``, started
    again; the next is killed once the restarted one is healthy."""
    stack, monitor = trial.stack, trial.monitor
    for service in SERVICES:
        proc = stack.procs[service]
        monitor.killed.add(proc.pid)
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait)
        await asyncio.sleep(trial.config.killed_seconds)
        started = time.monotonic()
        stack.start_as(service, service, wait=False)
        trial.fault.recover_from[service] = started
        try:
            await asyncio.to_thread(stack.wait_healthy, service, trial.config.health_timeout)
            trial.fault.notes.append(
                f"{service} killed, restarted, healthy in {time.monotonic() - started:.1f}s"
            )
        except AssertionError as exc:
            trial.fault.notes.append(f"{service} not healthy after its restart: {exc}"[:300])


FAULTS: dict[str, Fault] = {
    "broker-stopped": broker_stopped,
    "broker-frozen": broker_frozen,
    "services-killed": services_killed,
    "broker-killed": broker_killed,
}


# -- reading what happened ---------------------------------------------------------------------


class TopicReader:
    """Reads a topic from its beginning, incrementally: each :meth:`read_new` returns what was
    appended since the last call (up to the end offsets at the time of the call)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.positions: dict[TopicPartition, int] = dict.fromkeys(self.tps, 0)

    async def read_new(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        # what the pipeline sees: committed records (an aborted submission never existed)
        consumer = make_consumer(
            self.bootstrap,
            None,
            fetch_max_bytes=64 * 1024 * 1024,
            request_timeout_ms=15_000,
        )
        out: list[dict[str, Any]] = []
        await consumer.start()
        try:
            consumer.assign(self.tps)
            ends = await consumer.end_offsets(self.tps)
            for tp in self.tps:
                consumer.seek(tp, self.positions[tp])
            deadline = time.monotonic() + timeout
            while any(self.positions[tp] < ends[tp] for tp in self.tps):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading {self.topic} took longer than {timeout}s")
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                for tp, records in batch.items():
                    for record in records:
                        self.positions[tp] = record.offset + 1
                        if record.value is not None:
                            out.append(json.loads(record.value))
        finally:
            await consumer.stop()
        return out


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


@dataclass
class Delivery:
    """One .eml the sink stored."""

    stored_at: float
    message_id: str | None
    token: str | None
    file: str


class Evidence:
    """Everything read so far from the topics and the outbox, by message id and by token."""

    def __init__(self, readers: dict[str, TopicReader], outbox: Path) -> None:
        self.readers, self.outbox = readers, outbox
        self.seen_files: set[str] = set()
        # from kairos.schedule
        self.scheduled: dict[str, dict[str, Any]] = {}  # message id -> first scheduled event
        self.scheduled_count: Counter[str] = Counter()
        self.id_of_token: dict[str, str] = {}
        self.cancel_requested: set[str] = set()
        # kairos.due / kairos.dispatch: (emitted_at, due_at, attempt) per message id
        self.due: dict[str, list[tuple[float, int, int]]] = defaultdict(list)
        self.dispatch: dict[str, list[tuple[float, int, int]]] = defaultdict(list)
        # kairos.outcomes: the events per message id
        self.outcomes: dict[str, list[dict[str, Any]]] = defaultdict(list)
        # the sink
        self.deliveries: dict[str, list[Delivery]] = defaultdict(list)  # by message id
        self.delivered_tokens: dict[str, list[Delivery]] = defaultdict(list)
        self.unreadable: list[str] = []

    @classmethod
    def of(cls, stack: Stack) -> Evidence:
        """Evidence read from ``stack``'s four topics and its sink's outbox."""
        s = stack.settings
        bootstrap = s.kafka_bootstrap or ""
        readers = {
            name: TopicReader(bootstrap, s.topic(name), s.topic_partitions or 2)
            for name in ("schedule", "due", "dispatch", "outcomes")
        }
        return cls(readers, stack.outbox)

    async def refresh(self) -> None:
        """Read what is new on the four topics and in the outbox."""
        new = await asyncio.gather(*(r.read_new() for r in self.readers.values()))
        self.add(dict(zip(self.readers, new, strict=True)))
        self.read_outbox()

    def add(self, by_topic: dict[str, list[dict[str, Any]]]) -> None:
        """Fold events (by logical topic name) into what is known."""
        for event in by_topic.get("schedule", []):
            kind, mid = event.get("type"), event.get("message_id")
            if kind == "scheduled" and mid:
                self.scheduled_count[mid] += 1
                self.scheduled.setdefault(mid, event)
                content = event.get("content") or {}
                mime = content.get("mime", "")
                if content.get("mime_encoding") == "base64":
                    import base64

                    mime = base64.b64decode(mime).decode(errors="replace")
                match = _SUBJECT.search(mime.encode())
                if match:
                    self.id_of_token.setdefault(match.group(1).decode(), mid)
            elif kind == "cancel" and mid:
                self.cancel_requested.add(mid)
        for name, table in (("due", self.due), ("dispatch", self.dispatch)):
            for event in by_topic.get(name, []):
                table[event["message_id"]].append(
                    (_ts(event["emitted_at"]), int(event["due_at"]), int(event["attempt"]))
                )
        for event in by_topic.get("outcomes", []):
            if event.get("message_id"):
                self.outcomes[event["message_id"]].append(event)

    def read_outbox(self) -> None:
        if not self.outbox.exists():
            return
        for entry in os.scandir(self.outbox):
            name = entry.name
            if name.startswith(".") or not name.endswith(".eml") or name in self.seen_files:
                continue
            self.seen_files.add(name)
            head = Path(entry.path).read_bytes().split(b"\r\n\r\n", 1)[0]
            mid_match, token_match = _MESSAGE_ID.search(head), _SUBJECT.search(head)
            d = Delivery(
                stored_at=float(name.split("-", 1)[0]),
                message_id=mid_match.group(1).decode() if mid_match else None,
                token=token_match.group(1).decode() if token_match else None,
                file=name,
            )
            if d.message_id:
                self.deliveries[d.message_id].append(d)
            if d.token:
                self.delivered_tokens[d.token].append(d)
            if not d.message_id and not d.token:
                self.unreadable.append(name)

    def terminal(self, message_id: str) -> list[dict[str, Any]]:
        return [e for e in self.outcomes.get(message_id, []) if e["type"] in TERMINAL]


# -- the report --------------------------------------------------------------------------------


@dataclass
class Report:
    """The figures of one trial and the checks that failed."""

    scenario: str
    offered: int = 0
    accepted: int = 0
    accepted_immediate: int = 0
    refused_503: int = 0
    refused_other: Counter[str] = field(default_factory=Counter)
    unanswered: int = 0
    shed: int = 0
    written_late: int = 0  # refused, yet on kairos.schedule
    withdrawn: int = 0  # of those, with a cancelled outcome
    scheduled_events: int = 0
    due_events: int = 0
    dispatch_events: int = 0
    #: due / dispatch events beyond one per (message id, attempt): at-least-once repeats that
    #: the sender must absorb (reported, not a failure by themselves)
    due_repeats: int = 0
    dispatch_repeats: int = 0
    outcome_types: Counter[str] = field(default_factory=Counter)
    delivered: int = 0  # accepted ids with at least one copy in the sink
    sink_files: int = 0
    failed_reasons: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0  # extra copies in the sink of accepted messages
    duplicate_outcomes: int = 0  # extra terminal outcomes of accepted messages
    lost: list[str] = field(default_factory=list)
    not_scheduled: list[str] = field(default_factory=list)  # accepted, not on kairos.schedule
    stuck_at: Counter[str] = field(default_factory=Counter)  # where the lost ones stopped
    no_outcome: list[str] = field(default_factory=list)  # in the sink, no terminal outcome
    conflicting: list[str] = field(default_factory=list)
    cancelled_unasked: list[str] = field(default_factory=list)
    early: list[str] = field(default_factory=list)
    refused_delivered: list[str] = field(default_factory=list)
    #: for those: the withdrawal on the schedule stream and what the timer made of it
    refused_delivered_why: Counter[str] = field(default_factory=Counter)
    max_lateness: float = 0.0
    p99_lateness: float = 0.0
    #: from the end of the fault until ingest accepted every submission sent from then on
    accepting_again: float | None = None
    refused_after_fault: int = 0
    time_to_healthy: dict[str, float | None] = field(default_factory=dict)
    unhealthy_seconds: dict[str, float] = field(default_factory=dict)
    exits: dict[str, str] = field(default_factory=dict)
    fault_notes: list[str] = field(default_factory=list)
    settled_in: float | None = None
    elapsed: float = 0.0
    logs: str = ""
    failures: list[str] = field(default_factory=list)

    def table(self) -> str:
        def ids(values: list[str]) -> str:
            return f"{len(values)}" + (f"  first: {', '.join(values[:10])}" if values else "")

        rows: list[tuple[str, str]] = [
            ("offered (submissions sent)", f"{self.offered}  (+{self.shed} shed at the cap)"),
            ("accepted (201/202 with an id)", f"{self.accepted}  ({self.accepted_immediate} now)"),
            (
                "refused 503",
                f"{self.refused_503}  ({self.written_late} written late, {self.withdrawn} of them "
                "withdrawn: a cancelled outcome)",
            ),
            (
                "refused otherwise",
                ", ".join(f"{k}: {v}" for k, v in self.refused_other.items()) or "0",
            ),
            ("no answer (timeout/reset)", str(self.unanswered)),
            (
                "scheduled/due/dispatch events",
                f"{self.scheduled_events} / {self.due_events} / {self.dispatch_events}  "
                f"(repeats: due {self.due_repeats}, dispatch {self.dispatch_repeats})",
            ),
            (
                "outcome events",
                ", ".join(f"{k} {v}" for k, v in sorted(self.outcome_types.items())) or "0",
            ),
            ("delivered (accepted, in sink)", f"{self.delivered}  ({self.sink_files} .eml files)"),
            (
                "failed (terminal, by reason)",
                ", ".join(f"{k} {v}" for k, v in self.failed_reasons.items()) or "0",
            ),
            (
                "duplicate deliveries",
                f"{self.duplicates}  (allowed <= 1 per 10,000: "
                f"{allowed_duplicates(self.accepted)})",
            ),
            ("duplicate terminal outcomes", str(self.duplicate_outcomes)),
            ("LOST", ids(self.lost)),
            ("  of which never on schedule", ids(self.not_scheduled)),
            (
                "  lost ones stopped at",
                ", ".join(f"{k} {v}" for k, v in self.stuck_at.items()) or "-",
            ),
            ("delivered, no terminal outcome", ids(self.no_outcome)),
            ("conflicting terminal outcomes", ids(self.conflicting)),
            ("cancelled, never asked", ids(self.cancelled_unasked)),
            ("EARLY", ids(self.early)),
            ("refused yet delivered", ids(self.refused_delivered)),
            (
                "  their withdrawal",
                ", ".join(f"{k} {v}" for k, v in self.refused_delivered_why.items()) or "-",
            ),
            (
                "lateness (sink - due) max / p99",
                f"{self.max_lateness:.1f}s / {self.p99_lateness:.1f}s",
            ),
        ]
        again = self.accepting_again
        rows.append(
            (
                "ingest accepting again after",
                (
                    "NEVER (still refusing when the load stopped)"
                    if again is None
                    else f"{again:.1f}s"
                )
                + f"  ({self.refused_after_fault} refused or unanswered after the fault)",
            )
        )
        for service in WATCHED:
            t = self.time_to_healthy.get(service)
            rows.append(
                (
                    f"time to healthy: {service}",
                    ("NEVER" if t is None else f"{t:.1f}s")
                    + f"  (unhealthy {self.unhealthy_seconds.get(service, 0.0):.0f}s in all)",
                )
            )
        rows.append(
            ("processes exited", ", ".join(f"{k} {v}" for k, v in self.exits.items()) or "none")
        )
        rows.append(
            (
                "settled after the load",
                "NOT within the deadline" if self.settled_in is None else f"{self.settled_in:.1f}s",
            )
        )
        rows.append(("trial took", f"{self.elapsed:.0f}s"))
        width = max(len(k) for k, _ in rows)
        lines = [f"== chaos: {self.scenario} ==", *(f"  {k:<{width}}  {v}" for k, v in rows)]
        lines += [f"  fault: {note}" for note in self.fault_notes]
        lines.append(f"  logs: {self.logs}")
        lines.append("  RESULT: " + ("PASS" if not self.failures else "FAIL"))
        lines += [f"    - {f}" for f in self.failures]
        return "\n".join(lines)


def allowed_duplicates(accepted: int) -> int:
    return accepted // 10_000


def analyse(
    scenario: str,
    load: LoadGenerator,
    ev: Evidence,
    monitor: HealthMonitor,
    fault: FaultLog,
) -> Report:
    rep = Report(scenario=scenario, shed=load.shed, fault_notes=list(fault.notes))
    subs = load.submissions
    rep.offered = len(subs)
    accepted = {s.message_id: s for s in subs if s.message_id}
    rep.accepted = len(accepted)
    rep.accepted_immediate = sum(1 for s in accepted.values() if not s.scheduled)
    refused = [s for s in subs if s.status is not None and s.message_id is None]
    rep.refused_503 = sum(1 for s in refused if s.status == 503)
    rep.refused_other = Counter(f"{s.status} {s.code}".strip() for s in refused if s.status != 503)
    rep.unanswered = sum(1 for s in subs if s.status is None)
    rep.scheduled_events = sum(ev.scheduled_count.values())
    rep.due_events = sum(len(v) for v in ev.due.values())
    rep.dispatch_events = sum(len(v) for v in ev.dispatch.values())
    rep.due_repeats = rep.due_events - sum(len({a for *_x, a in v}) for v in ev.due.values())
    rep.dispatch_repeats = rep.dispatch_events - sum(
        len({a for *_x, a in v}) for v in ev.dispatch.values()
    )
    rep.outcome_types = Counter(e["type"] for v in ev.outcomes.values() for e in v)
    rep.sink_files = len(ev.seen_files)
    latenesses: list[float] = []

    for mid, sub in accepted.items():
        terminal = ev.terminal(mid)
        copies = ev.deliveries.get(mid, [])
        event = ev.scheduled.get(mid)
        due_at = int(event["due_at"]) if event else sub.due_at
        if copies:
            rep.delivered += 1
            rep.duplicates += len(copies) - 1
        if not terminal and not copies:
            rep.lost.append(mid)
            if event is None:
                rep.not_scheduled.append(mid)
                rep.stuck_at["never on schedule"] += 1
            elif mid in ev.dispatch:
                rep.stuck_at["dispatched, not sent"] += 1
            elif mid in ev.due:
                rep.stuck_at["due, not dispatched"] += 1
            else:
                rep.stuck_at["scheduled, never due"] += 1
        if copies and not terminal:
            rep.no_outcome.append(mid)
        kinds = {e["type"] for e in terminal}
        if len(kinds) > 1:
            rep.conflicting.append(mid)
        rep.duplicate_outcomes += max(0, len(terminal) - 1)
        for e in terminal:
            if e["type"] == "failed":
                rep.failed_reasons[f"{e.get('stage')}/{e.get('reason')}"] += 1
            if e["type"] == "cancelled":
                rep.cancelled_unasked.append(mid)
        if due_at is None:
            continue
        early = any(d.stored_at < due_at for d in copies)
        early |= any(e["type"] == "delivered" and _ts(e["delivered_at"]) < due_at for e in terminal)
        early |= any(emitted < due for emitted, due, _a in ev.due.get(mid, []))
        if early:
            rep.early.append(mid)
        latenesses.extend(d.stored_at - due_at for d in copies)

    if latenesses:
        latenesses.sort()
        rep.max_lateness = latenesses[-1]
        rep.p99_lateness = latenesses[min(len(latenesses) - 1, int(len(latenesses) * 0.99))]

    for sub in subs:
        if sub.message_id is not None or sub.status is None:
            continue  # accepted, or never answered (either fate is allowed)
        late_id = ev.id_of_token.get(sub.token)
        if late_id is not None:
            rep.written_late += 1
            if any(e["type"] == "cancelled" for e in ev.outcomes.get(late_id, [])):
                rep.withdrawn += 1
        delivered_outcome = late_id is not None and any(
            e["type"] == "delivered" for e in ev.outcomes.get(late_id, [])
        )
        if ev.delivered_tokens.get(sub.token) or delivered_outcome:
            rep.refused_delivered.append(f"{late_id} ({sub.status} {sub.code})")
            if late_id is None:
                rep.refused_delivered_why["not on schedule"] += 1
                continue
            asked = "cancel queued" if late_id in ev.cancel_requested else "no cancel"
            answers = [
                f"{e['type']} {e.get('reason') or e.get('scope') or ''}".strip()
                for e in ev.outcomes.get(late_id, [])
                if e["type"] in ("rejected", "cancelled")
            ]
            rep.refused_delivered_why[f"{asked}: {'; '.join(answers) or 'no answer'}"] += 1

    # ingest works again: from some point after the fault, every submission is accepted (a
    # 503, another 5xx or no answer is a refusal; a 4xx is the submission's own fault)
    after = sorted((s for s in subs if s.sent_at >= fault.ended_wall), key=lambda s: s.sent_at)

    def refused_now(s: Submission) -> bool:
        return s.message_id is None and (s.status is None or s.status >= 500)

    rep.refused_after_fault = sum(1 for s in after if refused_now(s))
    last_refused = max((i for i, s in enumerate(after) if refused_now(s)), default=-1)
    if last_refused + 1 < len(after):
        rep.accepting_again = max(0.0, after[last_refused + 1].sent_at - fault.ended_wall)

    for service in WATCHED:
        since = fault.recover_from.get(service, fault.ended)
        became = monitor.became_healthy.get(service)
        if monitor.healthy.get(service) and became is not None:
            rep.time_to_healthy[service] = max(0.0, became - since)
        else:
            rep.time_to_healthy[service] = None
        rep.unhealthy_seconds[service] = monitor.unhealthy_seconds.get(service, 0.0)
    rep.exits = dict(monitor.exits)

    f = rep.failures
    if rep.accepted == 0:
        f.append("nothing was accepted: the trial proves nothing")
    if rep.lost:
        f.append(f"{len(rep.lost)} accepted messages lost (no outcome, not in the sink)")
    if rep.no_outcome:
        f.append(f"{len(rep.no_outcome)} delivered without a terminal outcome on outcomes")
    if rep.conflicting:
        f.append(f"{len(rep.conflicting)} messages with conflicting terminal outcomes")
    if rep.cancelled_unasked:
        f.append(f"{len(rep.cancelled_unasked)} accepted messages cancelled, never asked to")
    if rep.early:
        f.append(f"{len(rep.early)} messages delivered (or due) before their second")
    if rep.duplicates > allowed_duplicates(rep.accepted):
        f.append(
            f"{rep.duplicates} duplicate deliveries of {rep.accepted} "
            f"(allowed {allowed_duplicates(rep.accepted)})"
        )
    if rep.duplicate_outcomes > allowed_duplicates(rep.accepted):
        f.append(f"{rep.duplicate_outcomes} accepted messages with more than one terminal outcome")
    if rep.refused_delivered:
        f.append(f"{len(rep.refused_delivered)} refused submissions delivered")
    if ev.unreadable:
        f.append(f"{len(ev.unreadable)} sink files without Message-ID or token")
    if rep.accepting_again is None:
        f.append(
            f"ingest still refusing when the load stopped, {len(after)} submissions after the "
            f"fault: {rep.refused_after_fault} refused or unanswered"
        )
    never = [s for s, t in rep.time_to_healthy.items() if t is None]
    if never:
        f.append(f"not healthy again after the fault: {', '.join(never)}")
    if rep.exits:
        f.append("processes exited: " + "; ".join(f"{k} {v}" for k, v in rep.exits.items()))
    if rep.settled_in is None:
        pass  # covered by lost / no_outcome above; recorded in the table
    return rep


# -- a trial -----------------------------------------------------------------------------------


@dataclass
class Trial:
    scenario: str
    broker: LocalKafka
    stack: Stack
    config: TrialConfig
    monitor: HealthMonitor
    load: LoadGenerator
    fault: FaultLog


async def _until(
    predicate: Callable[[], Awaitable[bool]], timeout: float, every: float = 1.0
) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(every)


async def _run(trial: Trial, inject: Fault) -> Report:
    config, stack, monitor = trial.config, trial.stack, trial.monitor
    started = time.monotonic()
    stop_load, stop_monitor = asyncio.Event(), asyncio.Event()
    monitor_task = asyncio.create_task(monitor.run(stop_monitor))
    load_task = asyncio.create_task(trial.load.run(stop_load))
    ev = Evidence.of(stack)
    settled_in: float | None = None
    try:
        # warm: the pipeline delivers before anything is broken
        async def warm() -> bool:
            ev.read_outbox()
            return len(ev.seen_files) >= config.warmup_deliveries

        if not await _until(warm, 60, every=0.2):
            raise AssertionError(f"pipeline never warmed up: {len(ev.seen_files)} delivered")
        await asyncio.sleep(config.before_seconds)  # load before the fault (not a wait for work)

        trial.fault.started = time.monotonic()
        try:
            await inject(trial)
        finally:
            trial.fault.ended, trial.fault.ended_wall = time.monotonic(), time.time()
        await asyncio.sleep(config.after_seconds)  # load after the fault (not a wait for work)
        stop_load.set()
        await load_task
        load_stopped = time.monotonic()

        accepted = [s.message_id for s in trial.load.submissions if s.message_id]
        last_due = max((s.due_at or 0 for s in trial.load.submissions), default=0)

        async def settled() -> bool:
            try:
                await ev.refresh()
            except Exception:  # the broker may still be coming back: try again
                return False
            every_one = all(ev.terminal(mid) for mid in accepted if mid)
            return every_one and monitor.all_healthy() and time.time() >= last_due

        ok = await _until(settled, config.drain_timeout)
        settled_in = time.monotonic() - load_stopped if ok else None
        if not monitor.all_healthy():
            # settled or not, give the services their own deadline to answer /healthz again
            async def healthy() -> bool:
                return monitor.all_healthy()

            await _until(
                healthy,
                max(0.0, trial.fault.ended + config.health_timeout - time.monotonic()),
                every=0.25,
            )
        with contextlib.suppress(Exception):
            await ev.refresh()
    finally:
        stop_load.set()
        stop_monitor.set()
        await asyncio.gather(load_task, monitor_task, return_exceptions=True)
    monitor.check_exits()
    report = analyse(trial.scenario, trial.load, ev, monitor, trial.fault)
    report.settled_in = settled_in
    report.elapsed = time.monotonic() - started
    report.logs = str(stack.logs)
    return report


def log_evidence(stack: Stack, signatures: dict[str, str] | None = None) -> str:
    """Per service log, how many lines match each failure signature, with the first one (to
    print with a failed trial)."""
    assert stack.logs is not None
    compiled = {k: re.compile(v) for k, v in (signatures or FAILURE_SIGNATURES).items()}
    out: list[str] = []
    for path in sorted(stack.logs.glob("*.log")):
        counts: Counter[str] = Counter()
        first: dict[str, str] = {}
        for line in path.read_text(errors="replace").splitlines():
            for label, regex in compiled.items():
                if regex.search(line):
                    counts[label] += 1
                    first.setdefault(label, line.strip()[:240])
        if counts:
            out.append(f"  {path.name}:")
            out += [f"    {label} x{n}: {first[label]}" for label, n in counts.items()]
    return "\n".join(out)


#: what the services' logs are searched for when a trial fails (label: regex)
FAILURE_SIGNATURES = {
    "traceback": r"Traceback",
    "out-of-order sequence": r"OutOfOrderSequence",
    "leader not available": r"LeaderNotAvailable",
    "producer fenced/unknown": r"UnknownProducerId|ProducerFenced|InvalidProducerEpoch",
    "kafka timeout": r"KafkaTimeoutError|RequestTimedOut",
    "crash": r"[Cc]rash|CRITICAL|Task exception was never retrieved",
    "agent/service stopped": r"[Ss]topping|exiting|[Ss]hutting down|Stopped",
    "withdrawn": r"withdrawn",
    "publish failed": r"publish failed",
    "broker unreachable": r"Unable connect to node|Connect call failed",
}


def start_stack(broker: LocalKafka, base: Path) -> Stack:
    """A fresh pipeline on ``broker``: own topics, groups, ports and state under ``base``."""
    stack = make_stack(broker.bootstrap, base)
    stack.start("sink", *SERVICES)
    stack.create_account("chaos")
    return stack


def run_trial(
    scenario: str, broker: LocalKafka, base: Path, config: TrialConfig, fault: str | None = None
) -> tuple[Report, str]:
    """Run fault ``fault`` of :data:`FAULTS` (default: ``scenario``) on a fresh pipeline as the
    trial named ``scenario``; the report and, when it failed, the matching lines of the
    services' logs."""
    stack = start_stack(broker, base)
    try:
        trial = Trial(
            scenario=scenario,
            broker=broker,
            stack=stack,
            config=config,
            monitor=HealthMonitor(stack),
            load=LoadGenerator(stack.http, stack.api_key, config),
            fault=FaultLog(scenario),
        )
        report = asyncio.run(_run(trial, FAULTS[fault or scenario]))
    finally:
        stack.stop_all()
    evidence = log_evidence(stack) if report.failures else ""
    return report, evidence


def thaw(broker: LocalKafka) -> None:
    """Continue the broker if a trial left it frozen."""
    with contextlib.suppress(OSError, ValueError):
        os.kill(broker_pid(broker), signal.SIGCONT)


def ensure_broker(broker: LocalKafka) -> None:
    """The broker running and not frozen (a trial that failed midway may leave it stopped)."""
    thaw(broker)
    broker.start()
