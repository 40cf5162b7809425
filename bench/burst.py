"""Burst: N messages all due in the same second (or, with ``within``, the same N spread over
``within`` seconds after it, as ``deliverWithin`` places them: the ``spread`` scenario).

The messages are written straight into the schedule stream (as ingest writes them) and the due
second is chosen so that the timer holds all of them before it comes: a probe measures how fast
the timer takes schedules in, the due second is set past the estimate with a margin, and the
bench then checks (from the timer's committed offsets) when the timer had really caught up.
From the due second on it reads the ``due`` and ``outcomes`` streams.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from typing import Any

from bench import cpu
from bench.harness import (
    Broker,
    Pipeline,
    Seen,
    TopicWatch,
    end_offsets,
    group_lag,
    log_bytes,
    wait_consumed,
)
from bench.load import build, event_size, produce, rate, spread, thin
from services.ingest.spread import Spread

TAG = "burst"
WARM = "warm"


async def timer_intake(
    p: Pipeline, account: str, n: int, deadline: float, size: str = "1k"
) -> tuple[float, float]:
    """(schedules per second the timer takes in, seconds to build one event), measured with
    ``n`` messages due tomorrow."""
    t = time.monotonic()
    records = build(account, WARM, n, lambda i: int(time.time()) + 86_400, size)
    per_build = (time.monotonic() - t) / n
    started = time.time()
    await produce(p.bootstrap, p.topic("schedule"), records)
    ends = await end_offsets(p.bootstrap, p.topic("schedule"))
    done = await wait_consumed(
        p.bootstrap, p.settings.group("timer"), p.topic("schedule"), ends, deadline
    )
    return n / ((done or time.time()) - started), per_build


async def burst(
    p: Pipeline,
    account: str,
    n: int,
    lead: float,
    cap: float,
    broker: Broker | None = None,
    size: str = "1k",
    alone: bool = False,
    within: int = 0,
) -> dict[str, Any]:
    """Runs the burst. The timer is given up to ``lead`` seconds after the schedules are
    written to take them in before they fall due; figures are then gathered for up to ``cap``
    seconds after the due second (seconds after the due second unless named otherwise).

    The CPU of every process is read at the start, at the due second and at the end: the
    intake (schedules taken in) and the firing (due second to last outcome) are two windows.

    ``alone``: each stage drains its pre-filled input by itself. The validator and the sender
    are stopped (SIGSTOP) before the due second; the timer fires alone; once every due event
    is out the validator is resumed and drains the due stream alone, then the sender the
    dispatch stream. Each stage's clock starts when it is given its input (the due second for
    the timer, its SIGCONT for the others), as each hop of the raw relay's starts.

    ``within``: the messages are due over ``within`` seconds from the due second, at the seconds
    ``deliverWithin`` gives them (:class:`services.ingest.spread.Spread`); lateness is then
    also measured from each message's own due second (``delivery_lateness_own``)."""
    due_watch = TopicWatch(p.bootstrap, p.topic("due"), TAG)
    out_watch = TopicWatch(p.bootstrap, p.topic("outcomes"), TAG)
    dispatch_watch = TopicWatch(p.bootstrap, p.topic("dispatch"), TAG)
    await due_watch.start()
    await out_watch.start()
    if alone:
        await dispatch_watch.start()
    schedule, group = p.topic("schedule"), p.settings.group("timer")
    pids = p.pids(broker)
    intake_cpu = cpu.Window(pids).start()
    stages: dict[str, Any] = {}
    paused: list[str] = []
    try:
        probe_n = min(n, max(500, min(5_000, n // 20)))
        intake, per_build = await timer_intake(p, account, probe_n, time.monotonic() + 120, size)
        # the due second: when the timer should hold every message (at the rate the probe
        # measured, with a margin), but no more than ``lead`` seconds after the writing
        wait = min(n / intake * 1.25, lead)
        due = math.ceil(time.time() + n * per_build * 1.2 + 3 + wait)
        before = await end_offsets(p.bootstrap, schedule)
        offsets = Spread(within=within).offsets([str(i) for i in range(n)], [0] * n)
        records = build(account, TAG, n, lambda i: due + offsets[i], size)
        data_dir = broker.data_dir if broker else None
        bytes_before = log_bytes(data_dir, p.prefix)
        inject_started = time.time()
        inject = await produce(p.bootstrap, schedule, records)
        del records
        ends = await end_offsets(p.bootstrap, schedule)
        held = await wait_consumed(
            p.bootstrap, group, schedule, ends, time.monotonic() + (due - time.time()) - 0.5
        )
        backlog = 0
        if held is None:  # the due second came first: how much was the timer still to read?
            _, done = await group_lag(p.bootstrap, group, schedule)
            backlog = sum(
                max(0, end - max(done.get(q, 0), before.get(q, 0))) for q, end in ends.items()
            )
        if alone:
            for service in ("validator", "sender"):
                p.pause(service)
                paused.append(service)
        await asyncio.sleep(max(0.0, due - time.time()))
        intake_ms = intake_cpu.stop()
        fire_cpu = cpu.Window(pids).start()
        until = time.monotonic() + (due + within + cap - time.time())
        if held is None:
            held = await wait_consumed(p.bootstrap, group, schedule, ends, until)
        sink_before = p.sink.count
        if alone:
            stages["timer"] = await stage(due_watch, "due", n, float(due), pids, until, "timer")
            for service, watch, kind in (
                ("validator", dispatch_watch, "dispatch"),
                ("sender", out_watch, None),
            ):
                window = cpu.Window(pids).start()
                started = time.time()
                p.resume(service)
                paused.remove(service)
                stages[service] = await stage(watch, kind, n, started, pids, until, service, window)
        complete = await out_watch.until(lambda: out_watch.terminal() >= n, until)
        # a due event can only come before its outcome, so the due stream is complete too
        await due_watch.until(lambda: due_watch.unique("due") >= n, time.monotonic() + 2)
        fire_ms = fire_cpu.stop()
        ended = time.time()
        bytes_after = log_bytes(data_dir, p.prefix)
    finally:
        for service in paused:
            p.resume(service)
        await due_watch.stop()
        await out_watch.stop()
        await dispatch_watch.stop()
    result = figures(due, n, due_watch.seen, out_watch.seen)
    result.update(
        {
            "size": size,
            "spread_seconds": within,
            "lead_seconds": lead,
            "cap_seconds": cap,
            "complete": complete,
            "timer_intake_per_s": intake,
            "probe_n": probe_n,
            "inject_seconds": inject,
            "inject_ended_before_due": due - inject_started - inject,
            # > 0: the timer held every schedule that many seconds before the due second
            "timer_had_all_before_due": (due - held) if held is not None else None,
            "timer_backlog_at_due": backlog,
            "relayed_by_sink": p.sink.count - sink_before,
            "sink": p.relay,
            "cpu_ms": {"intake": intake_ms, "firing": fire_ms},
            "firing_wall_seconds": ended - due,
            "record_bytes": event_size(size),
            # growth of each topic's log segments on the broker's disk while the burst was
            # written and delivered (None: the broker's data dir is not on this machine)
            "topic_bytes": topic_growth(bytes_before, bytes_after),
        }
    )
    if alone:
        result["stages"] = stages
    return result


async def stage(
    watch: TopicWatch,
    kind: str | None,
    n: int,
    started: float,
    pids: dict[str, int | None],
    until: float,
    service: str,
    window: cpu.Window | None = None,
) -> dict[str, Any]:
    """One stage draining its input alone: seconds from ``started`` (wall clock) until its
    output holds ``n`` unique ids (``kind`` events, or settled outcomes when None), its rate
    (``n`` ÷ those seconds, as the relay hop's), and the CPU of every process meanwhile."""
    window = window or cpu.Window(pids).start()

    def count() -> int:
        return watch.terminal() if kind is None else watch.unique(kind)

    complete = await watch.until(lambda: count() >= n, until)
    used = window.stop()
    seen = [
        s.received - started
        for s in watch.seen
        if (s.type in ("delivered", "failed") if kind is None else s.type == kind)
        and s.received >= started - 1
    ]
    seen.sort()
    seconds = seen[-1] if seen and complete else None
    return {
        "service": service,
        "n": n,
        "complete": complete,
        "out": count(),
        "seconds": seconds,
        "first_output": seen[0] if seen else None,
        # from its clock's start to its last output, as the relay hop's is measured
        "per_s": n / seconds if seconds else None,
        "first_to_last_per_s": rate(seen),
        "cpu_ms": used,
    }


def topic_growth(
    before: dict[str, int] | None, after: dict[str, int] | None
) -> dict[str, int] | None:
    """Bytes each topic's log grew by between two readings (a topic new since the first
    reading grew by all of its bytes)."""
    if before is None or after is None:
        return None
    return {t: after[t] - before.get(t, 0) for t in sorted(after)}


def first_by_id(events: list[Seen]) -> tuple[list[Seen], int]:
    """The first event of each message id (events are in arrival order), and how many more
    (duplicates) there were."""
    first: dict[str, Seen] = {}
    for s in events:
        first.setdefault(s.message_id, s)
    return list(first.values()), len(events) - len(first)


def figures(due: int, n: int, dues: list[Seen], outs: list[Seen]) -> dict[str, Any]:
    """The burst's figures from what the bench saw, counted by unique message id (repeats of
    an id are counted apart as duplicates). Events that never came count as unbounded
    lateness, so a quantile that reaches them reads ``inf``."""
    dues, due_dups = first_by_id(dues)
    done, out_dups = first_by_id([s for s in outs if s.type in ("delivered", "failed")])
    delivered = [s for s in done if s.type == "delivered"]
    delivered_events = sum(1 for s in outs if s.type == "delivered")
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
        "due_duplicates": due_dups,
        "delivered": len(delivered),
        "delivered_events": delivered_events,
        "outcome_duplicates": out_dups,
        "failed": dict(Counter(s.reason or "?" for s in done if s.type == "failed")),
        "first_due_event": due_arrivals[0] if due_arrivals else None,
        "last_due_event": due_arrivals[-1] if len(dues) >= n else None,
        "last_outcome": out_arrivals[-1] if len(done) >= n else None,
        "due_events_per_s": rate(due_arrivals),
        "outcomes_per_s": rate(out_arrivals),
        # lateness as the events say it (emitted_at, delivered_at minus the due second)
        "due_lateness": spread([(s.at or math.inf) - due for s in dues] + missing_due),
        "delivery_lateness": spread([(s.at or math.inf) - due for s in delivered] + missing_out),
        # from each message's own due second (the same as above unless spread)
        "delivery_lateness_own": spread(
            [(s.at or math.inf) - s.due_at for s in delivered] + missing_out
        ),
        "early": early_due + early_out,
        "series": {
            "due_arrivals": thin(due_arrivals),
            "outcome_arrivals": thin(out_arrivals),
            "due_lateness": thin(sorted((s.received - due, (s.at or 0) - due) for s in dues)),
        },
    }
