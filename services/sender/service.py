"""The sender service: consumes dispatch events, relays each message over SMTP and publishes
its outcome on ``kairos.outcomes``; a transient failure re-enters the timer as the next attempt.

A dispatch event redelivered after a crash is not sent again: at start-up the sender re-reads
the recent outcomes (``dedupe_lookback``) and skips any (message id, attempt) that already has
one. A crash between the relay's 250 and the outcome's acknowledgement can still repeat a
delivery; that window is as small as one SMTP round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord

from kairos import tracing
from kairos.clock import Clock, to_datetime
from kairos.kafka.clients import (
    copartitioned_on_broker,
    make_consumer,
    partitions_of_topics,
    start_groupless,
)
from kairos.kafka.deadletter import dead_letter_record
from kairos.kafka.producer import DurableProducer, PublishFailed, Record
from kairos.logging import get_logger
from kairos.metrics import LATENESS, count, track_lag
from kairos.service import HealthServer, consume, until_done
from kairos.settings import KairosSettings
from kairos.unsubscribe import make_token, unsubscribe_key
from schemas.codec import DecodeError, decode_as, encode
from schemas.events import Delivered, Dispatch
from schemas.reference import SuppressionState, suppression_key
from schemas.registry import (
    DEAD_LETTER,
    DISPATCH,
    OUTCOMES,
    SCHEDULE,
    SUPPRESSIONS,
)
from services.sender.content import ContentReader, ContentUnavailable, Found
from services.sender.handled import HandledAttempts
from services.sender.message import DkimKeys, prepare, unsubscribe_fields
from services.sender.outcome import SendResult, result_of, text_missing
from services.sender.policy import RetryPolicy
from services.sender.relay import RelayPool, RelayReply

log = get_logger("kairos.sender")

#: outcome types that mean the sender already handled an attempt
HANDLED = {b"delivered", b"deferred", b"failed"}


@dataclass(frozen=True)
class UnsubscribeLinks:
    """The one-click unsubscribe fields of a message: a link to ``<base>/u/<token>``."""

    key: bytes
    base: str
    mailto: str | None = None

    @classmethod
    def from_settings(cls, settings: KairosSettings) -> UnsubscribeLinks:
        base = settings.unsubscribe_url or f"http://{settings.http_host}:{settings.http_port}"
        return cls(unsubscribe_key(settings), base.rstrip("/"), settings.unsubscribe_mailto)

    def fields(self, d: Dispatch) -> list[bytes]:
        """No fields for a message to several recipients (ingest marks only single-recipient
        messages; one link cannot stand for several people)."""
        if len(d.content.rcpt_to) != 1:
            return []
        token = make_token(self.key, d.account_id, d.message_id, d.content.rcpt_to[0])
        return unsubscribe_fields(f"{self.base}/u/{token}", self.mailto)


async def handled_attempts(bootstrap: str, topic: str, since: float) -> set[tuple[str, int]]:
    """(message id, attempt) of every delivery outcome on ``topic`` since unix time ``since``,
    read up to the end offsets at the time of the call."""
    consumer: AIOKafkaConsumer = make_consumer(bootstrap, None)
    await start_groupless(consumer)
    seen: set[tuple[str, int]] = set()
    try:
        tps = await partitions_of_topics(consumer, [topic])
        if not tps:
            return seen
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.offsets_for_times({tp: int(since * 1000) for tp in tps})
        for tp in tps:
            found = starts.get(tp)
            consumer.seek(tp, found.offset if found is not None else ends[tp])
        remaining = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batch.items():
                for r in records:
                    d = orjson.loads(r.value)
                    if d.get("type", "").encode() in HANDLED and d.get("stage") != "validation":
                        seen.add((d["message_id"], d["attempt"]))
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return seen


async def run(settings: KairosSettings, bootstrap: str, clock: Clock, stop: asyncio.Event) -> None:
    """Run the sender until ``stop`` is set."""
    dispatch_topic = settings.topic(DISPATCH)
    outcomes_topic = settings.topic(OUTCOMES)
    schedule_topic = settings.topic(SCHEDULE)
    suppressions_topic = settings.topic(SUPPRESSIONS)
    policy = RetryPolicy(
        settings.retry_base, settings.retry_cap, settings.retry_max_attempts, settings.retry_max_age
    )
    dkim_keys = DkimKeys(settings.dkim_key_dir, settings.dkim_selector)
    unsubscribe = UnsubscribeLinks.from_settings(settings)
    producer = DurableProducer(bootstrap, "sender")
    consumer = make_consumer(bootstrap, settings.group("sender"))
    pool = RelayPool(settings)
    started = False
    health = HealthServer(
        "0.0.0.0", settings.health_port or 8083, lambda: started and producer.healthy
    )
    await health.start()
    await producer.start()
    texts = ContentReader(bootstrap, schedule_topic)
    await texts.start()
    handled = HandledAttempts(settings.dedupe_lookback)
    #: attempts being relayed now: a copy of a dispatch in the same fetch (or a concurrent
    #: one) is not relayed beside it
    in_flight: set[tuple[str, int]] = set()

    reload = asyncio.Event()

    class Reload(ConsumerRebalanceListener):  # type: ignore[misc]
        """Partitions (re)assigned, perhaps taken over from another sender: re-read what was
        already handled before delivering their next batch (done in the main task, not here:
        a listener runs inside the group coordinator)."""

        async def on_partitions_revoked(self, revoked: object) -> None:
            return None

        async def on_partitions_assigned(self, assigned: object) -> None:
            reload.set()

    await consumer.start()
    # a dispatch's partition number is the one key hashing chooses on the outcomes and
    # schedule topics (a retry must reach its message's timer partition) only where the
    # three have as many partitions, on the broker (not only in the settings)
    same_partitions = await copartitioned_on_broker(
        consumer, [dispatch_topic, outcomes_topic, schedule_topic]
    )
    consumer.subscribe([dispatch_topic], listener=Reload())
    started = True
    log.info(
        "sender started",
        topic=dispatch_topic,
        relay=f"{settings.relay_host}:{settings.relay_port}",
    )

    def decoded(record: ConsumerRecord[bytes, bytes]) -> Dispatch | DecodeError:
        try:
            return decode_as(record.value, Dispatch)
        except DecodeError as exc:
            return exc

    async def deliver(
        record: ConsumerRecord[bytes, bytes],
        d: Dispatch | DecodeError,
        found: Found,
    ) -> None:
        if isinstance(d, DecodeError):
            await dead(record, "undecodable", d)
            return
        attempt = (d.message_id, d.attempt)
        if attempt in handled or attempt in in_flight:
            count("sender", "duplicate_skipped")
            log.info("already handled, not sent again", message_id=d.message_id, attempt=d.attempt)
            return
        in_flight.add(attempt)
        try:
            if d.content_ref is not None:
                text = found.get((d.content_ref.partition, d.content_ref.offset))
                if text is None:
                    await publish(d, record, text_missing(d, clock.now()), None)
                    return
                # the envelope is the dispatch's (validation may have dropped recipients)
                d = d.model_copy(
                    update={
                        "content": d.content.model_copy(
                            update={"mime": text.mime, "mime_encoding": text.mime_encoding}
                        )
                    }
                )
            await relay(d, record)
        except (TimeoutError, OSError, PublishFailed):
            raise
        except Exception as exc:
            await dead(record, "unprocessable", exc)
        finally:
            in_flight.discard(attempt)

    async def dead(record: ConsumerRecord[bytes, bytes], reason: str, exc: Exception) -> None:
        letter = dead_letter_record(
            settings.topic(DEAD_LETTER), "sender", reason, exc, record, clock.now()
        )
        await producer.publish_until_done([letter])

    async def relay(d: Dispatch, record: ConsumerRecord[bytes, bytes]) -> None:
        with tracing.step(
            "smtp",
            d.traceparent,
            **{"kairos.message_id": d.message_id, "kairos.attempt": d.attempt},
        ) as traceparent:
            extra = unsubscribe.fields(d) if d.content.list_unsubscribe else []
            data = dkim_keys.sign(
                prepare(d.content.raw(), clock.now(), d.content.from_domain, extra),
                d.content.from_domain,
            )
            reply = await pool.send(d.content.mail_from, d.content.rcpt_to, data)
            tracing.annotate(**{"smtp.code": reply.code, "smtp.recipients": len(d.content.rcpt_to)})
        await publish(d, record, result_of(d, reply, clock.now(), policy, traceparent), reply)

    async def publish(
        d: Dispatch,
        record: ConsumerRecord[bytes, bytes],
        result: SendResult,
        reply: RelayReply | None,
    ) -> None:
        # keyed by message id: the dispatch's partition number where the topics match
        part = record.partition if same_partitions else None
        out = [Record(outcomes_topic, encode(result.outcome), record.key, part)]
        for address in result.hard_bounces:
            bounce = SuppressionState(
                occurred_at=to_datetime(clock.now()),
                account_id=d.account_id,
                address=address.lower(),
                reason="hard_bounce",
                added_at=to_datetime(clock.now()),
            )
            out.append(
                Record(
                    suppressions_topic,
                    encode(bounce),
                    suppression_key(d.account_id, address).encode(),
                )
            )
        if result.retry is not None:
            out.append(Record(schedule_topic, encode(result.retry), record.key, part))
        # retried through a broker outage: relayed mail always gets its outcome
        await producer.publish_until_done(out)
        handled.add((d.message_id, d.attempt), clock.now())
        count("sender", result.outcome.type)
        if isinstance(result.outcome, Delivered):
            LATENESS.labels("delivered").observe(result.outcome.lateness_ms / 1000)
        log.info(
            result.outcome.type,
            message_id=d.message_id,
            attempt=d.attempt,
            code=None if reply is None else reply.code,
            hard_bounces=len(result.hard_bounces),
        )

    reloading = asyncio.Lock()

    async def handle(records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        # partitions are handled side by side: each waits until the re-read is done
        async with reloading:
            if reload.is_set():
                reload.clear()
                since = clock.now() - settings.dedupe_lookback
                # nothing is relayed before the re-read is complete
                again = await until_done(
                    "re-reading outcomes",
                    lambda: handled_attempts(bootstrap, outcomes_topic, since),
                    stop,
                )
                handled.update(again, clock.now())
        ds = [decoded(r) for r in records]
        # the texts of the attempts still to relay (a redelivered one needs none)
        refs = {
            (d.content_ref.partition, d.content_ref.offset): (d.message_id, d.attempt)
            for d in ds
            if isinstance(d, Dispatch)
            and d.content_ref is not None
            and (d.message_id, d.attempt) not in handled
        }
        found: Found = (
            await until_done(
                "reading message texts", lambda: texts.fetch(refs), stop, ContentUnavailable
            )
            if refs
            else {}
        )
        await asyncio.gather(*(deliver(r, d, found) for r, d in zip(records, ds, strict=True)))

    lag = asyncio.create_task(track_lag("sender", consumer))
    try:
        await consume(consumer, handle, stop)
    finally:
        lag.cancel()
        await consumer.stop()
        await texts.stop()
        await producer.stop()
        await pool.close()
        await health.stop()
