"""The timer's faust wiring: one agent (concurrency 1) over the schedule stream.

Time arrives as events: a ``@app.timer`` writes a :class:`~schemas.events.Tick` into every
schedule partition this worker owns, and the agent walks that partition's due-second index
when it processes the tick (faust allows table writes only inside stream processing). Due
events are published and acknowledged before the index slots are freed, so a crash re-emits
but never loses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import faust

from kairos.clock import Clock, to_datetime
from kairos.logging import get_logger
from kairos.settings import KairosSettings
from schemas.codec import decode_as, encode
from schemas.events import (
    Cancelled,
    CancelRequested,
    Due,
    Failed,
    PauseRequested,
    RescheduleRequested,
    ResumeRequested,
    Scheduled,
    ScheduleStreamEvent,
    Tick,
)
from schemas.registry import MAX_MESSAGE_BYTES, topic_spec
from services.timer.state import Fire, TimerState

log = get_logger("kairos.timer")

#: most due events published before waiting for their acknowledgement
EMIT_CHUNK = 2000


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
            producer_max_request_size=MAX_MESSAGE_BYTES,
            consumer_max_fetch_size=MAX_MESSAGE_BYTES,
            broker_commit_every=1000,
            broker_commit_interval=1.0,
            web_enabled=True,
            web_host="0.0.0.0",
            web_port=web_port,
            table_standby_replicas=0,
            stream_wait_empty=False,
            loghandlers=[],
        )
        raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
        self.schedule_topic = self.app.topic(
            settings.topic("schedule"),
            partitions=partitions,
            key_type=bytes,
            value_type=bytes,
            **raw,
        )
        self.due_topic = self.app.topic(
            settings.topic("due"), key_type=bytes, value_type=bytes, **raw
        )
        self.outcomes_topic = self.app.topic(
            settings.topic("outcomes"), key_type=bytes, value_type=bytes, **raw
        )
        self.pending = self.app.Table(
            "pending",
            partitions=partitions,
            key_type=bytes,
            value_type=bytes,
            changelog_topic=self.app.topic(
                settings.topic("timer-pending-changelog"),
                partitions=partitions,
                key_type=bytes,
                value_type=bytes,
                **raw,
            ),
        )
        self.index = self.app.Table(
            "index",
            partitions=partitions,
            key_type=bytes,
            value_type=bytes,
            changelog_topic=self.app.topic(
                settings.topic("timer-index-changelog"),
                partitions=partitions,
                key_type=bytes,
                value_type=bytes,
                **raw,
            ),
        )
        self.emitted = 0
        self.app.agent(self.schedule_topic, name="schedule", concurrency=1)(self._agent)
        if settings.tick_interval > 0:
            self.app.timer(interval=settings.tick_interval)(self._tick)
        timer = self

        async def healthz(view: Any, request: Any) -> Any:
            ready = timer.ready()
            return view.json({"status": "ok" if ready else "starting"},
                             status=200 if ready else 503)

        self.app.page("/healthz")(healthz)

    # -- ticks ---------------------------------------------------------------------------

    async def _tick(self) -> None:
        name = self.schedule_topic.get_topic_name()
        now = self.clock.now()
        for tp in self.app.assignor.assigned_actives():
            if tp.topic == name:
                tick = Tick(partition=tp.partition, now=now)
                await self.schedule_topic.send(
                    value=encode(tick), partition=tp.partition, force=True
                )

    def ready(self) -> bool:
        """Ready once partitions are assigned and the tables are recovered."""
        recovery = self.app.tables.recovery
        return bool(
            not self.app.rebalancing
            and recovery.completed.is_set()
            and not recovery.in_recovery
        )

    # -- the agent -----------------------------------------------------------------------

    async def _agent(self, stream: Any) -> Any:
        async for event in stream.events():
            partition = event.message.partition
            state = TimerState(self.pending, self.index, partition)
            try:
                ev = decode_as(event.value, ScheduleStreamEvent)
            except ValueError as exc:
                log.error("poison message skipped", partition=partition, error=str(exc)[:200])
                continue
            await self.handle(state, ev, event.value)
            yield None

    async def handle(self, state: TimerState, ev: Any, raw: bytes) -> None:
        now = ev.now if isinstance(ev, Tick) else self.clock.now()
        if isinstance(ev, Tick):
            while True:
                walk = state.walk(now, limit=EMIT_CHUNK)
                await self._publish(walk.fires, now)
                state.commit(walk, now)
                if walk.complete:
                    return
        if isinstance(ev, Scheduled):
            outcome = state.schedule(ev, raw, now)
        elif isinstance(ev, CancelRequested):
            outcome = state.cancel(ev.message_id)
            if outcome.accepted and outcome.entry is not None:
                sched = decode_as(outcome.entry.scheduled, Scheduled)
                await self._send_outcome(
                    Cancelled(
                        occurred_at=to_datetime(now),
                        account_id=sched.account_id,
                        message_id=ev.message_id,
                        attempt=sched.attempt,
                        due_at=outcome.entry.due,
                        batch_id=sched.batch_id,
                        recipients=sched.content.rcpt_to,
                        scope="message",
                    )
                )
        elif isinstance(ev, RescheduleRequested):
            outcome = state.reschedule(ev.message_id, ev.due_at, now)
        elif isinstance(ev, PauseRequested):
            outcome = state.pause(ev.message_id, now)
        elif isinstance(ev, ResumeRequested):
            outcome = state.resume(ev.message_id, now)
        else:  # pragma: no cover - the union is exhaustive
            return
        if not outcome.accepted:
            log.info(
                "command not applied", type=ev.type, message_id=ev.message_id, reason=outcome.reason
            )
        if outcome.fires:
            await self._publish(list(outcome.fires), now)
            state.forget(list(outcome.fires))

    async def _publish(self, fires: Iterable[Fire], now: float) -> None:
        futures = []
        for fire in fires:
            sched = decode_as(fire.entry.scheduled, Scheduled)
            if fire.kind == "due":
                due_second = fire.entry.due
                lateness = max(0, round((now - due_second) * 1000))
                value = encode(
                    Due(
                        occurred_at=to_datetime(now),
                        account_id=sched.account_id,
                        message_id=fire.message_id,
                        due_at=due_second,
                        attempt=fire.entry.attempt,
                        batch_id=sched.batch_id,
                        submitted_at=sched.submitted_at,
                        emitted_at=to_datetime(now),
                        lateness_ms=lateness,
                        content=sched.content,
                    )
                )
                futures.append(
                    await self.due_topic.send(key=fire.message_id.encode(), value=value, force=True)
                )
                self.emitted += 1
            else:
                futures.append(
                    await self.outcomes_topic.send(
                        key=fire.message_id.encode(),
                        force=True,
                        value=encode(
                            Failed(
                                occurred_at=to_datetime(now),
                                account_id=sched.account_id,
                                message_id=fire.message_id,
                                attempt=fire.entry.attempt,
                                due_at=fire.entry.due,
                                batch_id=sched.batch_id,
                                recipients=sched.content.rcpt_to,
                                stage="timer",
                                reason="expired",
                                text="paused for more than 72 hours past its send time",
                            )
                        ),
                    )
                )
            if len(futures) >= EMIT_CHUNK:
                await asyncio.gather(*futures)
                futures.clear()
        if futures:
            await asyncio.gather(*futures)

    async def _send_outcome(self, outcome: Any) -> None:
        fut = await self.outcomes_topic.send(
            key=outcome.message_id.encode(), value=encode(outcome), force=True
        )
        await fut


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def run(settings: KairosSettings, bootstrap: str, clock: Clock) -> None:
    """Run a timer worker until it is stopped (SIGINT/SIGTERM)."""
    from faust.worker import Worker

    (settings.state_dir / "timer").mkdir(parents=True, exist_ok=True)
    timer = Timer(settings, bootstrap, clock)
    worker = Worker(
        timer.app, loglevel=settings.log_level.lower(), quiet=True, redirect_stdouts=False
    )
    worker.execute_from_commandline()
