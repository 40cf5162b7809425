"""One way to build Kafka clients from settings.

Producers are durable by default (``acks=all``, idempotent); consumers commit manually, after
the work an event caused is acknowledged, which makes every service at-least-once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from kairos.settings import KairosSettings
from schemas.registry import MAX_MESSAGE_BYTES


def make_producer(bootstrap: str, **overrides: Any) -> AIOKafkaProducer:
    """A durable producer: acks=all, idempotent, large enough for a 10 MB message."""
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "max_request_size": MAX_MESSAGE_BYTES,
        "linger_ms": 5,
        "max_batch_size": 1024 * 1024,
        "request_timeout_ms": 30_000,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def make_consumer(
    bootstrap: str, group_id: str | None, *topics: str, **overrides: Any
) -> AIOKafkaConsumer:
    """A consumer with manual commits that starts from the earliest offset of a new group,
    reading committed records only (ingest writes each submission in a transaction; records
    written without one are visible at once either way)."""
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": MAX_MESSAGE_BYTES,
        "fetch_max_bytes": 4 * MAX_MESSAGE_BYTES,
        "isolation_level": "read_committed",
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


async def start_groupless(consumer: AIOKafkaConsumer) -> None:
    """Start a consumer without a group (it will ``assign`` partitions itself).

    aiokafka's group-less coordinator task must get to run once before the consumer can be
    stopped (stopping it earlier raises ``CancelledError`` from ``stop()``), so this yields."""
    await consumer.start()
    await asyncio.sleep(0)


async def partitions_of_topics(
    consumer: AIOKafkaConsumer, topics: Iterable[str]
) -> list[TopicPartition]:
    """Every partition of ``topics``, from fresh cluster metadata: a group-less consumer
    has no metadata for topics it is not subscribed to (the one place Kairos reaches into
    aiokafka's client)."""
    cluster = await consumer._client.fetch_all_metadata()
    return [
        TopicPartition(t, p) for t in topics for p in sorted(cluster.partitions_for_topic(t) or ())
    ]


async def copartitioned_on_broker(consumer: AIOKafkaConsumer, topics: Sequence[str]) -> bool:
    """Whether every one of ``topics`` exists with as many partitions as the others, on the
    broker: then a record keyed like another goes to the same partition number in each
    (what key hashing chooses), and a service may give that number instead of hashing."""
    counts = Counter(tp.topic for tp in await partitions_of_topics(consumer, topics))
    return len(counts) == len(set(topics)) and len(set(counts.values())) == 1


def make_admin(bootstrap: str) -> AIOKafkaAdminClient:
    """An admin client."""
    return AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)


def topic_name(settings: KairosSettings, logical: str) -> str:
    """The full name of registry topic ``logical`` under the configured prefix."""
    from schemas.registry import topic_spec

    return settings.topic(topic_spec(logical).name)
