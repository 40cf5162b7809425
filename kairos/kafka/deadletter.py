"""The dead-letter topic: where a record goes that a stage cannot decode or process, instead
of a log line and a skip (which is data loss with a log line).

Each dead letter keeps the record's origin (topic, partition, offset), key and value, the stage
and the error, so an operator can see what failed and, after a fix, replay it onto its origin
topic (``kairos dead-letter list`` / ``replay``).
"""

from __future__ import annotations

import base64
from typing import Any

from prometheus_client import Counter

from kairos.clock import to_datetime
from kairos.kafka.producer import Record
from kairos.logging import get_logger
from schemas.codec import encode
from schemas.events import DeadLetter

log = get_logger("kairos.deadletter")

DEAD_LETTERS = Counter(
    "kairos_dead_letters_total", "Records sent to the dead-letter topic.", ["stage", "reason"]
)


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def dead_letter_record(
    topic: str,
    stage: str,
    reason: str,
    error: BaseException | str,
    origin: Any,
    now: float,
) -> Record:
    """The dead-letter record for ``origin`` (an aiokafka ``ConsumerRecord`` or faust message:
    anything with ``topic``, ``partition``, ``offset``, ``key`` and ``value``), to publish on
    the full dead-letter topic name ``topic``. Counts it and logs it once."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    letter = DeadLetter(
        occurred_at=to_datetime(now),
        stage=stage,
        reason=reason,
        error=text[:1000],
        origin_topic=origin.topic,
        origin_partition=origin.partition,
        origin_offset=origin.offset,
        key=_b64(origin.key),
        value=_b64(origin.value),
    )
    DEAD_LETTERS.labels(stage, reason).inc()
    log.error(
        "record sent to the dead-letter topic",
        stage=stage,
        reason=reason,
        origin=f"{origin.topic}:{origin.partition}:{origin.offset}",
        error=text[:200],
    )
    key = f"{origin.topic}:{origin.partition}:{origin.offset}".encode()
    return Record(topic, encode(letter), key)


async def read_dead_letters(bootstrap: str, topic: str) -> list[DeadLetter]:
    """Every dead letter on ``topic`` now."""
    from kairos.kafka.follow import read_to_end
    from schemas.codec import decode_as

    try:
        records = await read_to_end(bootstrap, topic)
    except LookupError:
        return []
    return [decode_as(r.value, DeadLetter) for r in records]


async def replay(bootstrap: str, letters: list[DeadLetter]) -> int:
    """Write each letter's record back onto its origin topic (same key, same value): after a
    fix, the stage reads it again. Returns how many were replayed."""
    from kairos.kafka.producer import DurableProducer

    producer = DurableProducer(bootstrap, "dead-letter-replay")
    await producer.start()
    try:
        records = [
            Record(
                letter.origin_topic,
                base64.b64decode(letter.value) if letter.value is not None else b"",
                base64.b64decode(letter.key) if letter.key is not None else None,
            )
            for letter in letters
        ]
        await producer.publish(records, 60)
    finally:
        await producer.stop()
    return len(letters)
