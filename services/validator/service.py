"""The validator service: consumes due events, re-checks them, publishes dispatch events
(approved) or failed outcomes (rejected)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import ConsumerRecord

from kairos.clock import Clock, to_datetime
from kairos.kafka.clients import make_consumer, make_producer
from kairos.logging import get_logger
from kairos.service import HealthServer, consume
from kairos.settings import KairosSettings
from schemas.codec import DecodeError, decode_as, encode
from schemas.events import Dispatch, Due

log = get_logger("kairos.validator")


async def run(settings: KairosSettings, bootstrap: str, clock: Clock, stop: asyncio.Event) -> None:
    """Run the validator until ``stop`` is set."""
    due_topic = settings.topic("due")
    dispatch_topic = settings.topic("dispatch")
    producer = make_producer(bootstrap)
    consumer = make_consumer(bootstrap, settings.group("validator"), due_topic)
    started = False
    health = HealthServer("0.0.0.0", settings.health_port or 8082, lambda: started)
    await health.start()
    await producer.start()
    await consumer.start()
    started = True
    log.info("validator started", topic=due_topic)

    async def handle(records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        futures = []
        for record in records:
            try:
                due: Due = decode_as(record.value, Due)
            except DecodeError as exc:
                log.error("poison due event skipped", offset=record.offset, error=str(exc)[:200])
                continue
            now = clock.now()
            approved = Dispatch(
                **due.model_dump(exclude={"type", "schema_version", "event_id", "occurred_at"}),
                occurred_at=to_datetime(now),
                validated_at=to_datetime(now),
            )
            futures.append(await producer.send(dispatch_topic, encode(approved), key=record.key))
        await asyncio.gather(*futures)

    try:
        await consume(consumer, handle, stop)
    finally:
        await consumer.stop()
        await producer.stop()
        await health.stop()
