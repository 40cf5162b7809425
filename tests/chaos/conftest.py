"""The fault suite's broker: one of its own per module (faults stop, freeze and kill it; the
shared broker must never be touched), on ports from :func:`kairos.ports.free_port`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kairos.kafka.local import LocalKafka
from tests.chaos.harness import thaw
from tests.integration.conftest import own_broker


@pytest.fixture(scope="module")
def chaos_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    broker = own_broker(tmp_path_factory.mktemp("chaos-broker"), heap="512m")
    broker.start()
    try:
        yield broker
    finally:
        thaw(broker)  # a trial that failed midway may have left it frozen
        broker.stop()
