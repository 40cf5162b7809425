"""Shared fixtures. Integration tests (marked ``kafka``) get a real broker, one per session:
``KAIROS_KAFKA_BOOTSTRAP`` when set; a testcontainers broker with ``KAIROS_TEST_DOCKER=1`` (needs a
Docker engine); otherwise the local broker, started on demand. Each test gets its own topic prefix
and consumer groups, so tests never see each other's data."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    if os.environ.get("KAIROS_KAFKA_BOOTSTRAP"):
        yield os.environ["KAIROS_KAFKA_BOOTSTRAP"]
        return
    if os.environ.get("KAIROS_TEST_DOCKER") == "1":
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    from kairos.kafka.local import LocalKafka
    from kairos.settings import KairosSettings

    yield LocalKafka.from_settings(KairosSettings()).ensure_running()


@pytest.fixture
def prefix() -> str:
    """A fresh topic and group prefix for one test."""
    return f"t{uuid.uuid4().hex[:10]}."
