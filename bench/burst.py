"""Burst: N messages all due in the same second.

The messages are written straight into the schedule stream (as ingest writes them) and the due
second is chosen so that the timer holds all of them before it comes: a probe measures how fast
the timer takes schedules in, the due second is set past the estimate with a margin, and the
bench then checks (from the timer's committed offsets) when the timer had really caught up.
From the due second on it reads the ``due`` and ``outcomes`` streams.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any

from bench.harness import Pipeline, Seen, TopicWatch, end_offsets, group_lag, wait_consumed
from bench.load import build, produce, rate, spread, thin

TAG = "burst"
WARM = "warm"


async def timer_intake(p: Pipeline, account: str, n: int, deadline: float) -> tuple[float, float]:
    """(schedules per second the timer takes in, seconds to build one event), measured with
    ``n`` messages due tomorrow."""
    t = time.monotonic()
    records = build(account, WARM, n, lambda i: int(time.time()) + 86_400)
    per_build = (time.monotonic() - t) / n
    started = time.time()
    await produce(p.bootstrap, p.topic("schedule"), records)
    ends = await end_offsets(p.bootstrap, p.topic("schedule"))
    done = await wait_consumed(
        p.bootstrap, p.settings.group("timer"), p.topic("schedule"), ends, deadline
    )
    return n / ((done or time.time()) - started), per_build


async def burst(p: Pipeline, account: str, n: int, lead: float, cap: float) -> dict[str, Any]:
    """Runs the burst. The timer is given up to ``lead`` seconds after the schedules are
    written to take them in before they fall due; figures are then gathered for up to ``cap``
    seconds after the due second (seconds after the due second unless named otherwise)."""
    due_watch = TopicWatch(p.bootstrap, p.topic("due"), TAG)
    out_watch = TopicWatch(p.bootstrap, p.topic("outcomes"), TAG)
    await due_watch.start()
    await out_watch.start()
    schedule, group = p.topic("schedule"), p.settings.group("timer")
    try:
        probe_n = max(500, min(5_000, n // 20))
        intake, per_build = await timer_intake(p, account, probe_n, time.monotonic() + 120)
        # the due second: when the timer should hold every message (at the rate the probe
        # measured, with a margin), but no more than ``lead`` seconds after the writing
        wait = min(n / intake * 1.25, lead)
        due = math.ceil(time.time() + n * per_build * 1.2 + 3 + wait)
        before = await end_offsets(p.bootstrap, schedule)
        records = build(account, TAG, n, lambda i: due)
        inject_started = time.time()
        inject = await produce(p.bootstrap, schedule, records)
        del records
        ends = await end_offsets(p.bootstrap, schedule)
        held = await wait_consumed(
            p.bootstrap, group, schedule, ends, time.monotonic() + (due - time.time())
        )
        backlog = 0
        if held is None:  # the due second came first: how much was the timer still to read?
            _, done = await group_lag(p.bootstrap, group, schedule)
            backlog = sum(
                max(0, end - max(done.get(q, 0), before.get(q, 0))) for q, end in ends.items()
            )
        until = time.monotonic() + (due + cap - time.time())
        if held is None:
            held = await wait_consumed(p.bootstrap, group, schedule, ends, until)
        sink_before = p.sink.count
        complete = await out_watch.until(lambda: out_watch.terminal() >= n, until)
        # a due event can only come before its outcome, so the due stream is complete too
        await due_watch.until(lambda: len(due_watch.seen) >= n, time.monotonic() + 2)
    finally:
        await due_watch.stop()
        await out_watch.stop()
    result = figures(due, n, due_watch.seen, out_watch.seen)
    result.update(
        {
            "lead_seconds": lead,
            "cap_seconds": cap,
            "complete": complete,
            "timer_intake_per_s": intake,
            "inject_seconds": inject,
            "inject_ended_before_due": due - inject_started - inject,
            # > 0: the timer held every schedule that many seconds before the due second
            "timer_had_all_before_due": (due - held) if held is not None else None,
            "timer_backlog_at_due": backlog,
            "relayed_by_sink": p.sink.count - sink_before,
        }
    )
    return result


def figures(due: int, n: int, dues: list[Seen], outs: list[Seen]) -> dict[str, Any]:
    """The burst's figures from what the bench saw. Events that never came count as
    unbounded lateness, so a quantile that reaches them reads ``inf``."""
    done = [s for s in outs if s.type in ("delivered", "failed")]
    delivered = [s for s in done if s.type == "delivered"]
    missing_due = [math.inf] * (n - len(dues))
    missing_out = [math.inf] * (n - len(delivered))
    early_due = sum(1 for s in dues if (s.at or math.inf) < s.due_at or s.received < s.due_at)
    early_out = sum(1 for s in delivered if (s.at or math.inf) < s.due_at or s.received < s.due_at)
    due_arrivals = sorted(s.received - due for s in dues)
    out_arrivals = sorted(s.received - due for s in done)
    return {
        "n": n,
        "due_second": due,
        "due_events": len(dues),
        "delivered": len(delivered),
        "failed": dict(Counter(s.reason or "?" for s in done if s.type == "failed")),
        "first_due_event": due_arrivals[0] if due_arrivals else None,
        "last_due_event": due_arrivals[-1] if len(dues) >= n else None,
        "last_outcome": out_arrivals[-1] if len(done) >= n else None,
        "due_events_per_s": rate(due_arrivals),
        "outcomes_per_s": rate(out_arrivals),
        # lateness as the events say it (emitted_at, delivered_at minus the due second)
        "due_lateness": spread([(s.at or math.inf) - due for s in dues] + missing_due),
        "delivery_lateness": spread([(s.at or math.inf) - due for s in delivered] + missing_out),
        "early": early_due + early_out,
        "series": {
            "due_arrivals": thin(due_arrivals),
            "outcome_arrivals": thin(out_arrivals),
            "due_lateness": thin(sorted((s.received - due, (s.at or 0) - due) for s in dues)),
        },
    }
