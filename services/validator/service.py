"""The validator service: consumes due events, re-checks each against the reference data as
it is now, and publishes a dispatch event (approved) or a ``failed`` outcome (rejected).

It makes no decision before its reference view has caught up with the log."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import ConsumerRecord

from kairos import tracing
from kairos.clock import Clock, to_datetime
from kairos.kafka.clients import make_consumer
from kairos.kafka.deadletter import dead_letter_record
from kairos.kafka.producer import DurableProducer, Record
from kairos.logging import get_logger
from kairos.metrics import count, track_lag
from kairos.service import HealthServer, consume
from kairos.settings import KairosSettings
from schemas.codec import DecodeError, decode_as, encode
from schemas.events import Dispatch, Due, Failed
from schemas.registry import DEAD_LETTER, DISPATCH, DUE, OUTCOMES
from services.reference.rules import Reference
from services.reference.view import ReferenceView
from services.validator.decide import Approved, decide

log = get_logger("kairos.validator")


def judge(due: Due, ref: Reference, now: float) -> Dispatch | Failed:
    """The event that follows ``due``: a dispatch, or a ``failed`` outcome with its reason."""
    with tracing.step("validate", due.traceparent, **{"kairos.message_id": due.message_id}) as tp:
        verdict = decide(due, ref)
    if isinstance(verdict, Approved):
        content = due.content
        if verdict.dropped:
            content = content.model_copy(update={"rcpt_to": verdict.recipients})
        return Dispatch(
            **due.model_dump(
                exclude={
                    "type",
                    "schema_version",
                    "event_id",
                    "occurred_at",
                    "content",
                    "traceparent",
                }
            ),
            content=content,
            occurred_at=to_datetime(now),
            validated_at=to_datetime(now),
            traceparent=tp,
        )
    return Failed(
        occurred_at=to_datetime(now),
        account_id=due.account_id,
        message_id=due.message_id,
        attempt=due.attempt,
        due_at=due.due_at,
        batch_id=due.batch_id,
        recipients=due.content.rcpt_to,
        stage="validation",
        reason=verdict.reason,
        text=verdict.text,
        traceparent=tp,
    )


async def run(settings: KairosSettings, bootstrap: str, clock: Clock, stop: asyncio.Event) -> None:
    """Run the validator until ``stop`` is set."""
    due_topic = settings.topic(DUE)
    dispatch_topic = settings.topic(DISPATCH)
    outcomes_topic = settings.topic(OUTCOMES)
    producer = DurableProducer(bootstrap, "validator")
    consumer = make_consumer(bootstrap, settings.group("validator"), due_topic)
    view = ReferenceView(settings, bootstrap)
    health = HealthServer(
        "0.0.0.0", settings.health_port or 8082, lambda: view.caught_up and producer.healthy
    )
    await health.start()
    await producer.start()
    await view.start()
    await view.wait_caught_up(None)
    await consumer.start()
    log.info("validator started", topic=due_topic)

    dead_letter_topic = settings.topic(DEAD_LETTER)

    def dead(record: ConsumerRecord[bytes, bytes], reason: str, exc: Exception) -> Record:
        return dead_letter_record(dead_letter_topic, "validator", reason, exc, record, clock.now())

    async def handle(records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        out: list[Record] = []
        for record in records:
            try:
                due: Due = decode_as(record.value, Due)
                event = judge(due, view, clock.now())
            except DecodeError as exc:
                out.append(dead(record, "undecodable", exc))
                continue
            except Exception as exc:
                out.append(dead(record, "unprocessable", exc))
                continue
            topic = dispatch_topic if isinstance(event, Dispatch) else outcomes_topic
            count("validator", "dispatched" if isinstance(event, Dispatch) else "failed")
            if isinstance(event, Failed):
                log.info("rejected at send time", message_id=due.message_id, reason=event.reason)
            out.append(Record(topic, encode(event), record.key))
        # retried through a broker outage: the batch is committed only once all is durable
        await producer.publish_until_done(out, stop)

    lag = asyncio.create_task(track_lag("validator", consumer))
    try:
        await consume(consumer, handle, stop)
    finally:
        lag.cancel()
        await consumer.stop()
        await view.stop()
        await producer.stop()
        await health.stop()
