"""``kairos topics apply`` creates what the registry declares, and is idempotent."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kairos.kafka.clients import make_admin
from kairos.kafka.topics import apply_topics
from kairos.settings import KairosSettings
from schemas.registry import TOPICS

pytestmark = pytest.mark.kafka


async def test_apply_creates_every_registry_topic(bootstrap: str, prefix: str) -> None:
    env = {**os.environ, "KAIROS_KAFKA_BOOTSTRAP": bootstrap, "KAIROS_TOPIC_PREFIX": prefix}
    run = subprocess.run(
        [sys.executable, "-m", "kairos.cli", "topics", "apply"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("created") == len(TOPICS)
    settings = KairosSettings(kafka_bootstrap=bootstrap, topic_prefix=prefix)
    admin = make_admin(bootstrap)
    await admin.start()
    try:
        described = {
            d["topic"]: d
            for d in await admin.describe_topics([settings.topic(s.name) for s in TOPICS])
        }
    finally:
        await admin.close()
    for spec in TOPICS:
        assert len(described[settings.topic(spec.name)]["partitions"]) == spec.partitions
    again = await apply_topics(settings, bootstrap)
    assert {r.action for r in again} == {"ok"}, [r for r in again if r.action != "ok"]


async def test_apply_reports_drift(bootstrap: str, prefix: str) -> None:
    settings = KairosSettings(kafka_bootstrap=bootstrap, topic_prefix=prefix, topic_partitions=1)
    await apply_topics(settings, bootstrap)
    wider = KairosSettings(kafka_bootstrap=bootstrap, topic_prefix=prefix, topic_partitions=3)
    results = await apply_topics(wider, bootstrap)
    assert all(r.action == "drift" and "partitions 1 != 3" in r.detail for r in results)


async def test_copartitioned_is_read_from_the_broker(bootstrap: str, prefix: str) -> None:
    """The sender gives its outcomes and retries the dispatch's partition number only where
    the broker's topics have as many partitions (a retry must reach its message's timer)."""
    from aiokafka.admin import NewTopic

    from kairos.kafka.clients import copartitioned_on_broker, make_consumer, start_groupless

    two, other_two, three = f"{prefix}two", f"{prefix}two-b", f"{prefix}three"
    admin = make_admin(bootstrap)
    await admin.start()
    consumer = make_consumer(bootstrap, None)
    try:
        await admin.create_topics(
            [NewTopic(two, 2, 1), NewTopic(other_two, 2, 1), NewTopic(three, 3, 1)]
        )
        await start_groupless(consumer)
        assert await copartitioned_on_broker(consumer, [two, other_two])
        assert not await copartitioned_on_broker(consumer, [two, three])
        assert not await copartitioned_on_broker(consumer, [two, f"{prefix}missing"])
    finally:
        await consumer.stop()
        await admin.delete_topics([two, other_two, three])
        await admin.close()
