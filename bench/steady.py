"""Steady state: schedules written at a fixed rate, each due 2 s after it is written."""

from __future__ import annotations

import math
import time
from typing import Any

from bench.burst import first_by_id
from bench.harness import Pipeline, TopicWatch
from bench.load import paced, rate, scheduled, spread
from schemas.codec import encode

TAG = "steady"
#: seconds between writing a schedule and its due second (at least; due seconds are whole)
AHEAD = 2


async def steady(
    p: Pipeline, account: str, per_s: int, seconds: float, drain: float
) -> dict[str, Any]:
    """Writes ``per_s`` schedules a second for ``seconds``, then waits up to ``drain`` seconds
    for the last outcome."""
    due_watch = TopicWatch(p.bootstrap, p.topic("due"), TAG)
    out_watch = TopicWatch(p.bootstrap, p.topic("outcomes"), TAG)
    await due_watch.start()
    await out_watch.start()

    def make(mid: str) -> tuple[bytes, bytes]:
        return mid.encode(), encode(scheduled(account, mid, int(time.time()) + AHEAD))

    try:
        started = time.time()
        sent = await paced(p.bootstrap, p.topic("schedule"), per_s, seconds, make, TAG)
        wrote_for = time.time() - started
        n = len(sent)
        complete = await out_watch.until(
            lambda: out_watch.terminal() >= n, time.monotonic() + AHEAD + drain
        )
    finally:
        await due_watch.stop()
        await out_watch.stop()
    # counted by unique message id; repeats are duplicates, counted apart
    dues, due_dups = first_by_id(due_watch.seen)
    delivered, out_dups = first_by_id([s for s in out_watch.seen if s.type == "delivered"])
    early = sum(
        1 for s in [*dues, *delivered] if (s.at or math.inf) < s.due_at or s.received < s.due_at
    )
    return {
        "rate_asked": per_s,
        "seconds": seconds,
        "drain_seconds": drain,
        "complete": complete,
        "written": n,
        "written_per_s": n / wrote_for,
        "due_events": len(dues),
        "due_duplicates": due_dups,
        "delivered": len(delivered),
        "delivered_duplicates": out_dups,
        "delivered_per_s": rate(sorted(s.received for s in delivered)),
        "due_lateness": spread(
            [(s.at or math.inf) - s.due_at for s in dues] + [math.inf] * (n - len(dues))
        ),
        "delivery_lateness": spread(
            [(s.at or math.inf) - s.due_at for s in delivered] + [math.inf] * (n - len(delivered))
        ),
        "early": early,
    }
