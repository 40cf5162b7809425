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
