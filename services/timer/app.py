"""The timer's faust wiring: one agent (concurrency 1) over the schedule stream.

Time arrives as events: a ``@app.timer`` writes a :class:`~schemas.events.Tick` into every
schedule partition this worker owns, and the agent walks that partition's due-second index
when it processes the tick (faust allows table writes only inside stream processing). Due
events are published and acknowledged before the index slots are freed, so a crash re-emits
but never loses.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Iterable
from typing import Any, cast

import faust
import orjson
from faust.streams import _current_event
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kairos import tracing
from kairos.clock import Clock, to_datetime
from kairos.kafka.deadletter import dead_letter_record
from kairos.kafka.producer import Acknowledged, DurableProducer, Record
from kairos.logging import get_logger, quiet_retries
from kairos.metrics import LATENESS, TICK, count
from kairos.settings import KairosSettings
from schemas.codec import decode_as, encode
from schemas.events import (
    BatchCommand,
    Cancelled,
    CancelRequested,
    CommandRejected,
    ContentRef,
    Due,
    Failed,
    PauseRequested,
    RescheduleRequested,
    ResumeRequested,
    Scheduled,
    ScheduleStreamEvent,
    Tick,
    new_event_id,
)
from schemas.registry import (
    DEAD_LETTER,
    DUE,
    MAX_MESSAGE_BYTES,
    OUTCOMES,
    SCHEDULE,
    TIMER_INDEX_CHANGELOG,
    TIMER_PENDING_CHANGELOG,
    copartitioned,
    topic_spec,
)
from services.timer import changelog
from services.timer.buffered import Buffered
from services.timer.fetch import eager_deliveries
from services.timer.state import Entry, Fire, TimerState

log = get_logger("kairos.timer")

#: most due events published before waiting for their acknowledgement
EMIT_CHUNK = 2000
#: schedule-stream events folded together (and the longest wait to fill a batch)
BATCH = 1000
BATCH_WITHIN = 0.01


class Timer:
    """Holds the faust app, its topics and tables, and the agent's logic."""

    def __init__(self, settings: KairosSettings, bootstrap: str, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        partitions = settings.topic_partitions or topic_spec("schedule").partitions
        self.partitions = partitions
        web_port = settings.health_port or 8081
        self.app = faust.App(
            settings.group("timer"),
            broker=f"kafka://{bootstrap}",
            store=settings.timer_store,
            datadir=str(settings.state_dir / "timer"),
            topic_partitions=partitions,
            topic_replication_factor=settings.replication_factor,
            topic_allow_declare=True,
            processing_guarantee="at_least_once",
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            producer_linger=0.005,
            producer_max_request_size=MAX_MESSAGE_BYTES,
            consumer_max_fetch_size=MAX_MESSAGE_BYTES,
            broker_commit_every=1000,
            broker_commit_interval=1.0,
            web_enabled=True,
            web_host="0.0.0.0",
            web_port=web_port,
            table_standby_replicas=settings.timer_standby_replicas,
            broker_session_timeout=settings.session_timeout,
            consumer_group_instance_id=settings.timer_instance_id,
            broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
            stream_wait_empty=False,
            loghandlers=[],
        )
        raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
        self.schedule_topic = self.app.topic(
            settings.topic(SCHEDULE),
            partitions=partitions,
            key_type=bytes,
            value_type=bytes,
            **raw,
        )
        # per database (a table's partition): faust's defaults (64 MB memtables, 3 of them, and
        # a 2 GB block cache) let RSS grow with the pending messages until a memtable flushes
        rocksdb_options = {
            "write_buffer_size": settings.timer_rocksdb_write_buffer_mb * 2**20,
            "max_write_buffer_number": 2,
            "block_cache_size": settings.timer_rocksdb_block_cache_mb * 2**20,
        }
        self.pending = self.app.Table(
            "pending",
            options=rocksdb_options,
            partitions=partitions,
            key_type=bytes,
            value_type=bytes,
            changelog_topic=self.app.topic(
                settings.topic(TIMER_PENDING_CHANGELOG),
                partitions=partitions,
                key_type=bytes,
                value_type=bytes,
                **raw,
            ),
        )
        self.index = self.app.Table(
            "index",
            options=rocksdb_options,
            partitions=partitions,
            key_type=bytes,
            value_type=bytes,
            changelog_topic=self.app.topic(
                settings.topic(TIMER_INDEX_CHANGELOG),
                partitions=partitions,
                key_type=bytes,
                value_type=bytes,
                **raw,
            ),
        )
        self.emitted = 0
        self.bootstrap = bootstrap
        self.due_name, self.outcomes_name = settings.topic(DUE), settings.topic(OUTCOMES)
        self.dead_letter_name = settings.topic(DEAD_LETTER)
        # due events and outcomes go to the schedule event's partition number when the
        # topics have as many partitions (the default): what key hashing would choose
        self.copartitioned = copartitioned(settings.topic_partitions, SCHEDULE, DUE, OUTCOMES)
        #: (topic, key, value, partition) encoded and waiting to be published
        self._out: list[tuple[str, bytes, bytes | None, int | None]] = []
        self._producer: DurableProducer | None = None
        self.tick_failures = 0
        self.app.agent(self.schedule_topic, name="schedule", concurrency=1)(self._agent)
        self.app.on_before_shutdown.connect(cast(Any, self._stop_producer))
        if settings.tick_interval > 0:
            self.app.timer(interval=settings.tick_interval)(self._tick)
        timer = self

        async def healthz(view: Any, request: Any) -> Any:
            ready = timer.ready()
            return view.json(
                {"status": "ok" if ready else "starting"}, status=200 if ready else 503
            )

        self.app.page("/healthz")(healthz)

        async def metrics(view: Any, request: Any) -> Any:
            # aiohttp wants the charset apart from the content type
            return view.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

        self.app.page("/metrics")(metrics)

    # -- ticks ---------------------------------------------------------------------------

    async def _tick(self) -> None:
        name = self.schedule_topic.get_topic_name()
        now = self.clock.now()
        for tp in self.app.assignor.assigned_actives():
            if tp.topic == name:
                tick = Tick(partition=tp.partition, now=now)
                try:
                    await self.schedule_topic.send(
                        value=encode(tick), partition=tp.partition, force=True
                    )
                except Exception as exc:
                    self.tick_failures += 1
                    log.warning("tick not sent", partition=tp.partition, error=repr(exc)[:200])
                    return

    def ready(self) -> bool:
        """Ready once partitions are assigned and the tables are recovered, and not while
        its producer cannot write."""
        recovery = cast(Any, self.app.tables).recovery
        producer_ok = self._producer is None or self._producer.healthy
        return bool(
            not self.app.rebalancing
            and recovery.completed.is_set()
            and not recovery.in_recovery
            and producer_ok
        )

    # -- the agent -----------------------------------------------------------------------

    async def _agent(self, stream: Any) -> None:
        """Takes the stream in batches and folds each batch into a write-back cache of the
        tables, written once per changed key at the end: far fewer table writes and
        changelog records than one per event.

        faust acknowledges a batch's events when the loop asks for the next batch, and also
        when the loop is left by an exception (``take_events`` acks in a ``finally``): an
        exception escaping :meth:`handle_batch` would commit offsets past events whose
        effects were never written. So nothing is let out: broker trouble is retried inside
        (:meth:`_drain` retries until every record is acknowledged), and anything else ends
        the process at once, before faust can acknowledge or commit, so the batch is read
        again by the next worker."""
        async for events in stream.take_events(BATCH, within=BATCH_WITHIN):
            try:
                await self.handle_batch(events)
            except asyncio.CancelledError:
                # stopping: the batch's offsets must not be committed either
                self._abandon("cancelled mid-batch")
                raise
            except BaseException as exc:
                log.exception("timer batch failed", error=repr(exc)[:300])
                self._abandon(repr(exc)[:200])

    def _abandon(self, why: str) -> None:
        """Leave without committing: at least once, never lost (the next worker or the
        restarted one reads the batch again)."""
        log.error("timer exits without committing the batch in hand", reason=why)
        logging.shutdown()
        os._exit(70)

    async def handle_batch(self, events: list[Any]) -> None:
        states: dict[int, tuple[TimerState, Buffered, Buffered, Any]] = {}
        for event in events:
            partition = event.message.partition
            # faust routes table reads and writes to the partition of the "current event";
            # set it in this task's context only (the stream's own attribute belongs to the
            # task filling the batch)
            _current_event.set(weakref.ref(event))
            if partition not in states:
                pending = Buffered(self.pending, self.pending.data)
                index = Buffered(self.index, self.index.data)
                states[partition] = (TimerState(pending, index, partition), pending, index, event)
            state = states[partition][0]
            try:
                ev: Any = decode_as(event.value, ScheduleStreamEvent)
            except ValueError as exc:
                letter = dead_letter_record(
                    self.dead_letter_name,
                    "timer",
                    "undecodable",
                    exc,
                    event.message,
                    self.clock.now(),
                )
                self._out.append((letter.topic, letter.key or b"", letter.value, None))
                continue
            if isinstance(ev, Scheduled) and withdrawn(ev, appended_at(event.message)):
                self._withdrawn(ev, event.value, state.partition)
                continue
            await self.handle(state, ev, event.value, (partition, event.message.offset))
        await self._drain()
        # then the tables: changelog records acknowledged first, stores written after; the
        # index's before the pending entries' (services/timer/changelog.py says why)
        index_changes, pending_changes = [], []
        for partition, (_state, pending, index, first) in states.items():
            # a delete's check reads the store: of this partition
            _current_event.set(weakref.ref(first))
            index_changes.append(changelog.TableChanges(self.index, partition, index.changes()))
            pending_changes.append(
                changelog.TableChanges(self.pending, partition, pending.changes())
            )
        await changelog.write(self._publish, [index_changes, pending_changes], self._still_mine)

    def _still_mine(self, partition: int) -> bool:
        """Is the schedule stream's ``partition`` still actively assigned to this worker?"""
        name = self.schedule_topic.get_topic_name()
        return any(
            tp.topic == name and tp.partition == partition
            for tp in self.app.assignor.assigned_actives()
        )

    def _withdrawn(self, ev: Scheduled, raw: bytes, partition: int) -> None:
        """A submission appended after its ``accept_by``: its submitter was told no."""
        entry = Entry(raw, ev.due_at, ev.attempt, batch_id=ev.batch_id)
        event = fire_event(
            Fire(ev.message_id, entry, "cancelled", 0.0, "withdrawn"), self.clock.now()
        )
        part = partition if self.copartitioned else None
        self._out.append((self.outcomes_name, ev.message_id.encode(), encode(event), part))
        count("timer", "withdrawn")
        log.warning("late submission withdrawn", message_id=ev.message_id)

    async def handle(
        self, state: TimerState, ev: Any, raw: bytes, at: tuple[int, int] | None = None
    ) -> None:
        """Apply one schedule-stream event (found at ``at``: partition, offset) to one
        partition's state. Whatever it fires is published and acknowledged before the state
        forgets it. A schedule's text stays where it is, in the stream: the state keeps its
        envelope and ``at`` (the claim check)."""
        if isinstance(ev, Tick):
            TICK.labels(str(state.partition)).set(ev.now)
            while True:
                walk = state.walk(ev.now, limit=EMIT_CHUNK)
                # the tick's time decides what is due (never early, replayable); the time the
                # events say they went out is the real one: a tick queued behind a backlog of
                # schedule events is processed later than it was stamped
                self._emit(walk.fires, max(ev.now, self.clock.now()), state.partition)
                # into the batch's cache only: the tables see it after the drain and flush
                state.commit(walk, ev.now)
                if len(self._out) >= EMIT_CHUNK:
                    await self._drain()
                if walk.complete:
                    return
        now = self.clock.now()
        if isinstance(ev, Scheduled):
            outcome = state.schedule(ev, raw, now, ref=at)
        elif isinstance(ev, CancelRequested):
            outcome = state.cancel(ev.message_id, now)
        elif isinstance(ev, RescheduleRequested):
            outcome = state.reschedule(ev.message_id, ev.due_at, now)
        elif isinstance(ev, PauseRequested):
            outcome = state.pause(ev.message_id, now)
        elif isinstance(ev, ResumeRequested):
            outcome = state.resume(ev.message_id, now)
        elif isinstance(ev, BatchCommand):
            outcome = state.batch(ev.batch_id, ev.action, now)
        else:  # pragma: no cover - the union is exhaustive
            return
        if not outcome.accepted and ev.type in ("cancel", "reschedule", "pause", "resume"):
            rejected = CommandRejected(
                occurred_at=to_datetime(now),
                account_id=ev.account_id,
                message_id=ev.message_id,
                command=ev.type,
                reason=outcome.reason,
            )
            part = state.partition if self.copartitioned else None
            self._out.append((self.outcomes_name, ev.message_id.encode(), encode(rejected), part))
            count("timer", "rejected")
            log.info(
                "command rejected", command=ev.type, message_id=ev.message_id, reason=outcome.reason
            )
        if outcome.fires:
            self._emit(outcome.fires, now, state.partition)
            # forgotten in the batch's cache: a later command in the batch sees it gone, and
            # the tables forget it only after the drain has the broker's acknowledgement
            state.forget(list(outcome.fires))
            if len(self._out) >= EMIT_CHUNK:
                await self._drain()

    def _emit(self, fires: Iterable[Fire], now: float, partition: int) -> None:
        """Encode what ``fires`` publish and queue it for :meth:`_drain`. Due events and
        outcomes are keyed by message id; on topics partitioned like the schedule stream
        they go to the same partition number, given explicitly (no key hashing)."""
        part = partition if self.copartitioned else None
        for fire in fires:
            if fire.kind == "due":
                value, lateness_ms = due_bytes(fire, now)
                topic, kind = self.due_name, "due"
                self.emitted += 1
                LATENESS.labels("due").observe(lateness_ms / 1000)
            else:
                event = fire_event(fire, now)
                value, topic, kind = encode(event), self.outcomes_name, event.type
            self._out.append((topic, fire.message_id.encode(), value, part))
            count("timer", "expired" if fire.kind == "expired" else kind)

    async def _drain(self) -> None:
        """Publish everything queued (acks=all) and wait for every acknowledgement, retrying
        on a rebuilt producer through a broker outage of any length (a retry can repeat a
        due event: at least once, the same message id and attempt)."""
        if not self._out:
            return
        records = [Record(topic, value, key, part) for topic, key, value, part in self._out]
        await self._publish(records)
        self._out.clear()

    async def _publish(self, records: list[Record]) -> Acknowledged:
        if self._producer is None:
            producer = DurableProducer(self.bootstrap, "timer", linger_ms=5)
            await producer.start()
            self._producer = producer
        return await self._producer.publish_until_done(records)

    async def _stop_producer(self, app: Any, **kwargs: Any) -> None:
        # the consumer is stopped by now: nothing more is queued
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()


def appended_at(message: Any) -> float | None:
    """The broker's append time of a record (unix seconds), when the topic stamps it so."""
    if getattr(message, "timestamp_type", None) == 1 and message.timestamp is not None:
        return float(message.timestamp)
    return None


def withdrawn(ev: Scheduled, appended: float | None) -> bool:
    """Was ``ev`` written after its submitter was refused (appended after ``accept_by``)?"""
    return ev.accept_by is not None and appended is not None and appended > ev.accept_by.timestamp()


def due_bytes(fire: Fire, now: float) -> tuple[bytes, int]:
    """The encoded :class:`Due` event of a fire, and its lateness in ms: built from the stored
    scheduled event (validated when it was taken in) without a model round trip, the hot path
    of a burst. Equal to ``encode(fire_event(fire, now))`` but for the event id (tested)."""
    sched = orjson.loads(fire.entry.scheduled)
    at = to_datetime(now)
    lateness_ms = max(0, round((now - fire.entry.due) * 1000))
    with tracing.step(
        "due",
        sched.get("traceparent"),
        **{"kairos.message_id": fire.message_id, "kairos.lateness_ms": lateness_ms},
    ) as traceparent:
        pass
    event = {
        "event_id": new_event_id(),
        "type": "due",
        "schema_version": 2,
        "occurred_at": at,
        "account_id": sched["account_id"],
        "message_id": fire.message_id,
        "due_at": fire.entry.due,
        "attempt": fire.entry.attempt,
        "batch_id": sched.get("batch_id"),
        "submitted_at": sched["submitted_at"],
        "emitted_at": at,
        "lateness_ms": lateness_ms,
        "content": sched["content"],
    }
    if fire.entry.ref is not None:
        event["content_ref"] = {"partition": fire.entry.ref[0], "offset": fire.entry.ref[1]}
    if traceparent is not None:
        event["traceparent"] = traceparent
    return orjson.dumps(event, option=orjson.OPT_UTC_Z), lateness_ms


def fire_event(fire: Fire, now: float) -> Due | Failed | Cancelled:
    """The event a fire publishes: a due event, or an ``expired`` failure, or a cancellation."""
    sched: Scheduled = decode_as(fire.entry.scheduled, Scheduled)
    common: dict[str, Any] = {
        "occurred_at": to_datetime(now),
        "account_id": sched.account_id,
        "message_id": fire.message_id,
        "batch_id": sched.batch_id,
        "traceparent": sched.traceparent,
    }
    if fire.kind == "due":
        return Due(
            **common,
            due_at=fire.entry.due,
            attempt=fire.entry.attempt,
            submitted_at=sched.submitted_at,
            emitted_at=to_datetime(now),
            lateness_ms=max(0, round((now - fire.entry.due) * 1000)),
            content=sched.content,
            content_ref=None
            if fire.entry.ref is None
            else ContentRef(partition=fire.entry.ref[0], offset=fire.entry.ref[1]),
        )
    outcome = {
        **common,
        "attempt": fire.entry.attempt,
        "due_at": fire.entry.due,
        "recipients": sched.content.rcpt_to,
    }
    if fire.kind == "cancelled":
        return Cancelled(**outcome, scope=fire.scope)
    return Failed(
        **outcome,
        stage="timer",
        reason="expired",
        text="paused for more than 72 hours past its send time",
    )


def read_committed() -> None:
    """Make faust's worker consumer read committed records only: ingest writes submissions in
    transactions, and an aborted one must never be scheduled. faust chooses
    ``read_committed`` only with ``processing_guarantee="exactly_once"`` (whose open bugs the
    timer avoids), so the choice is made here, on the consumer faust builds, before it starts
    (aiokafka reads the setting when it starts its fetcher)."""
    from faust.transport.drivers import aiokafka as driver

    thread = driver.AIOKafkaConsumerThread
    if getattr(thread, "_kairos_read_committed", False):
        return
    create = thread._create_worker_consumer

    def create_read_committed(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._isolation_level = "read_committed"
        return consumer

    thread._create_worker_consumer = create_read_committed  # type: ignore[method-assign]
    thread._kairos_read_committed = True  # type: ignore[attr-defined]


def no_stream_checks_on_changelogs() -> None:
    """Keep faust's livelock detector to the streams. It checks every assigned partition, and
    a table's changelog partition is assigned too but never streamed: after recovery the
    consumer pauses it while the timer's own writes move its end, so an idle worker logged
    ``[ERROR] Stream has not started processing TP(...-changelog...)`` every 10 s from its
    fifth minute on, about nothing. The stream partitions are still checked."""
    from faust.transport.drivers import aiokafka as driver

    thread = driver.AIOKafkaConsumerThread
    if getattr(thread, "_kairos_changelogs_quiet", False):
        return
    verify = thread.verify_event_path

    def verify_event_path(self: Any, now: float, tp: Any) -> None:
        consumer = self.consumer
        if tp.topic in consumer.app.tables.changelog_topics:
            return None
        return verify(self, now, tp)

    thread.verify_event_path = verify_event_path  # type: ignore[method-assign]
    thread._kairos_changelogs_quiet = True  # type: ignore[attr-defined]


def run(settings: KairosSettings, bootstrap: str, clock: Clock) -> None:
    """Run a timer worker until it is stopped (SIGINT/SIGTERM)."""
    from faust.worker import Worker

    (settings.state_dir / "timer").mkdir(parents=True, exist_ok=True)
    read_committed()
    no_stream_checks_on_changelogs()
    eager_deliveries()
    timer = Timer(settings, bootstrap, clock)
    # faust's and mode's loggers exist only now that they are imported
    quiet_retries()
    worker = Worker(
        timer.app, loglevel=settings.log_level.lower(), quiet=True, redirect_stdouts=False
    )
    worker.execute_from_commandline()
