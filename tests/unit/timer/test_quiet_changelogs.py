"""faust's livelock detector skips the tables' changelog partitions (assigned, never streamed:
an idle timer logged an ERROR about them every 10 s) and still checks the stream's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from faust.transport.drivers import aiokafka as driver
from faust.types import TP

from services.timer.app import no_stream_checks_on_changelogs


def test_changelog_partitions_are_not_checked_and_stream_partitions_are() -> None:
    no_stream_checks_on_changelogs()
    no_stream_checks_on_changelogs()  # twice is once
    app = SimpleNamespace(tables=SimpleNamespace(changelog_topics={"k.timer-index-changelog"}))
    thread = SimpleNamespace(consumer=SimpleNamespace(app=app))
    verify = driver.AIOKafkaConsumerThread.verify_event_path
    assert verify(thread, 0.0, TP("k.timer-index-changelog", 0)) is None  # type: ignore[arg-type]
    # a stream partition goes on to faust's own check (which needs a real consumer thread)
    with pytest.raises(AttributeError):
        verify(thread, 0.0, TP("k.schedule", 0))  # type: ignore[arg-type]
