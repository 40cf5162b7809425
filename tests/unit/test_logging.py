"""A line repeated by a client retrying a broker that is down is logged once per interval."""

from __future__ import annotations

import logging

from kairos.logging import RepeatFilter


def test_repeats_are_held_back_and_counted() -> None:
    now = [0.0]
    f = RepeatFilter(10.0, clock=lambda: now[0])

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("aiokafka.client", logging.ERROR, "", 0, msg, None, None)

    assert f.filter(record("Unable connect to node %s"))
    assert not any(f.filter(record("Unable connect to node %s")) for _ in range(500))
    assert f.filter(record("another line"))
    now[0] = 10.5
    again = record("Unable connect to node %s")
    assert f.filter(again)
    assert "500 more" in str(again.msg)
