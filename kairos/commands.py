"""Publishing lifecycle commands into the schedule stream (used by the APIs and tests)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Literal

from aiokafka import AIOKafkaProducer

from kairos.settings import KairosSettings
from schemas.codec import encode
from schemas.events import BatchCommand
from schemas.registry import SCHEDULE


async def broadcast_batch_command(
    producer: AIOKafkaProducer,
    settings: KairosSettings,
    account_id: str,
    batch_id: str,
    action: Literal["cancel", "pause", "resume"],
    now: float,
) -> None:
    """Write the batch command into every partition of the schedule stream and wait for the
    broker's acknowledgement of each copy: a batch's messages live on every partition, and
    each timer partition applies the command to its own messages."""
    topic = settings.topic(SCHEDULE)
    partitions = sorted(await producer.partitions_for(topic))
    futures = []
    for partition in partitions:
        command = BatchCommand(
            occurred_at=datetime.fromtimestamp(now, tz=UTC),
            account_id=account_id,
            batch_id=batch_id,
            action=action,
            partition=partition,
        )
        futures.append(
            await producer.send(topic, encode(command), key=batch_id.encode(), partition=partition)
        )
    await asyncio.gather(*futures)
