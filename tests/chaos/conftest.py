"""The fault suite's broker: one of its own per module (faults stop, freeze and kill it; the
shared broker must never be touched), on ports from :func:`kairos.ports.free_port`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kairos.kafka.local import LocalKafka
from kairos.ports import free_port
from kairos.settings import KairosSettings
from tests.chaos.harness import thaw


@pytest.fixture(scope="module")
def chaos_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    settings = KairosSettings(
        state_dir=tmp_path_factory.mktemp("chaos-broker"),
        local_kafka_port=free_port(),
        local_kafka_controller_port=free_port(),
        local_kafka_heap="512m",
    )
    broker = LocalKafka.from_settings(settings)
    broker.start()
    try:
        yield broker
    finally:
        thaw(broker)  # a trial that failed midway may have left it frozen
        broker.stop()
