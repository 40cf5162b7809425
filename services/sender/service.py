"""The sender service: consumes dispatch events, relays each message over SMTP and publishes
its outcome on ``kairos.outcomes``."""

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
from schemas.events import Delivered, Dispatch, Failed
from services.sender.message import prepare
from services.sender.relay import RelayPool, RelayReply

log = get_logger("kairos.sender")


def outcome_of(d: Dispatch, reply: RelayReply, now: float) -> Delivered | Failed:
    """The outcome event of relaying ``d`` with ``reply`` at ``now``."""
    common = {
        "occurred_at": to_datetime(now),
        "account_id": d.account_id,
        "message_id": d.message_id,
        "attempt": d.attempt,
        "due_at": d.due_at,
        "batch_id": d.batch_id,
        "recipients": d.content.rcpt_to,
    }
    if reply.ok:
        return Delivered(
            **common,
            delivered_at=to_datetime(now),
            lateness_ms=max(0, round((now - d.due_at) * 1000)),
            smtp_code=reply.code,
            smtp_text=reply.text,
        )
    return Failed(
        **common,
        stage="delivery",
        reason="smtp_permanent" if reply.permanent else "smtp_transient",
        smtp_code=reply.code,
        enhanced_status=reply.enhanced,
        text=reply.text,
    )


async def run(settings: KairosSettings, bootstrap: str, clock: Clock, stop: asyncio.Event) -> None:
    """Run the sender until ``stop`` is set."""
    dispatch_topic = settings.topic("dispatch")
    outcomes_topic = settings.topic("outcomes")
    producer = make_producer(bootstrap)
    consumer = make_consumer(bootstrap, settings.group("sender"), dispatch_topic)
    pool = RelayPool(settings)
    started = False
    health = HealthServer("0.0.0.0", settings.health_port or 8083, lambda: started)
    await health.start()
    await producer.start()
    await consumer.start()
    started = True
    log.info(
        "sender started", topic=dispatch_topic, relay=f"{settings.relay_host}:{settings.relay_port}"
    )

    async def deliver(record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            d: Dispatch = decode_as(record.value, Dispatch)
        except DecodeError as exc:
            log.error("poison dispatch event skipped", offset=record.offset, error=str(exc)[:200])
            return
        data = prepare(d.content.raw(), clock.now(), d.content.from_domain)
        reply = await pool.send(d.content.mail_from, d.content.rcpt_to, data)
        outcome = outcome_of(d, reply, clock.now())
        await producer.send_and_wait(outcomes_topic, encode(outcome), key=record.key)
        log.info(outcome.type, message_id=d.message_id, code=reply.code)

    async def handle(records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        await asyncio.gather(*(deliver(r) for r in records))

    try:
        await consume(consumer, handle, stop)
    finally:
        await consumer.stop()
        await producer.stop()
        await pool.close()
        await health.stop()
