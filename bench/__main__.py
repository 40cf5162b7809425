"""``make bench``: one run, one broker, the pipeline next to the ceiling the broker allows.

    python -m bench [--quick] [--n N] [--rate R] [--pending P] [--only SCENARIO,...]

Uses ``KAIROS_KAFKA_BOOTSTRAP`` when set, else the local broker. Prints a table, writes
``bench/results/<timestamp>.json`` and ``<timestamp>-burst.png``. See docs/bench.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from bench import report, submission
from bench.burst import burst
from bench.ceiling import HOPS, KafkaTools, RawRelay, kafka_perf
from bench.harness import delete_topics, end_offsets, running, wait_consumed
from bench.load import build, event_size
from bench.steady import steady
from bench.timer_scale import timer_scale
from kairos.kafka.bootstrap import resolve_bootstrap
from kairos.logging import configure
from kairos.settings import KairosSettings
from schemas.registry import MESSAGE_PARTITIONS

RESULTS = Path(__file__).parent / "results"
SCENARIOS = ("ceiling", "submission", "steady", "burst", "timer")
ALL = ("ingest", "timer", "validator", "sender")
T = TypeVar("T")


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    settings = KairosSettings()
    bootstrap = resolve_bootstrap(settings)
    partitions = settings.topic_partitions or MESSAGE_PARTITIONS
    rf = settings.replication_factor
    run = uuid.uuid4().hex[:6]
    ours = f"kbench-{run}-"  # the ceiling's topics
    pipes = f"b{run}"  # each pipeline's topics and groups: b<run><letter>.
    only = set(args.only)
    r: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "args": vars(args),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "broker": bootstrap,
        "partitions": partitions,
        "hops": HOPS,
        "record_bytes": event_size(),
        "phase_seconds": {},
    }
    t0 = time.monotonic()
    say(f"bench {run}: broker {bootstrap}, {partitions} partitions, scenarios {','.join(only)}")

    async def phase(name: str, work: Awaitable[T]) -> T:
        started = time.monotonic()
        result = await work
        r["phase_seconds"][name] = round(time.monotonic() - started, 1)
        say(f"{name} done in {r['phase_seconds'][name]:.0f}s")
        return result

    tools = KafkaTools(settings, bootstrap)
    try:
        if "ceiling" in only:
            r["kafka_perf"] = await phase(
                "kafka perf tools",
                kafka_perf(tools, ours, partitions, rf, max(args.n, 50_000), r["record_bytes"]),
            )
            relay = RawRelay(bootstrap, ours, partitions, rf)
            await relay.start()
            try:
                records = build("acc_relay", "relay", args.n, lambda i: 0)
                r["raw_relay"] = await phase(
                    "raw relay burst",
                    relay.burst(records, "relay", time.monotonic() + args.burst_cap),
                )
                del records
                r["raw_relay_steady"] = await phase(
                    "raw relay steady",
                    relay.steady(
                        args.rate,
                        args.steady_seconds,
                        build("acc", "x", 1, lambda i: 0)[0][1],
                        "rsteady",
                        args.steady_drain,
                    ),
                )
            finally:
                relay.stop()
        if only & {"submission", "steady"}:
            async with running(bootstrap, partitions, f"{pipes}a.", *ALL) as p:
                account, key = p.create_account()
                if "submission" in only:
                    r["submission"] = await phase("submission", submit(p, key, args.submit_seconds))
                    # let the timer take in what was submitted before measuring steady state
                    ends = await end_offsets(bootstrap, p.topic("schedule"))
                    await wait_consumed(
                        bootstrap,
                        p.settings.group("timer"),
                        p.topic("schedule"),
                        ends,
                        time.monotonic() + 120,
                    )
                if "steady" in only:
                    r["steady"] = await phase(
                        "steady",
                        steady(p, account, args.rate, args.steady_seconds, args.steady_drain),
                    )
        if "burst" in only:
            async with running(bootstrap, partitions, f"{pipes}b.", *ALL) as p:
                account, _ = p.create_account()
                r["burst"] = await phase(
                    "burst", burst(p, account, args.n, args.burst_lead, args.burst_cap)
                )
        if "timer" in only:
            async with running(bootstrap, partitions, f"{pipes}c.", "timer") as p:
                r["timer_scale"] = await phase(
                    "timer scale",
                    timer_scale(p, tools, "acc_bench", args.pending, args.timer_cap),
                )
    finally:
        if not args.keep_topics:
            deleted = await delete_topics(bootstrap, [ours, pipes])
            say(f"deleted the run's {deleted} topics (--keep-topics keeps them)")
    r["elapsed_seconds"] = round(time.monotonic() - t0, 1)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    RESULTS.mkdir(exist_ok=True)
    png = RESULTS / f"{stamp}-burst.png"
    drew = report.chart(r, png)
    report.write_json(r, RESULTS / f"{stamp}.json")
    print()
    print(report.table(r))
    print()
    say(
        f"{r['elapsed_seconds']:.0f}s; wrote {RESULTS / (stamp + '.json')}"
        + (f" and {png}" if drew else "")
    )
    return r


async def submit(p: Any, api_key: str, seconds: float) -> dict[str, Any]:
    return {
        "http": await submission.http(p, api_key, seconds),
        "smtp": await submission.smtp(p, api_key, seconds),
        "raw": await submission.raw(p, seconds),
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    quick = {
        "n": 5_000,
        "rate": 500,
        "steady_seconds": 5,
        "steady_drain": 30,
        "burst_lead": 60,
        "burst_cap": 60,
        "pending": 10_000,
        "timer_cap": 120,
        "submit_seconds": 5,
    }
    full = {
        "n": 100_000,
        "rate": 5_000,
        "steady_seconds": 15,
        "steady_drain": 45,
        "burst_lead": 120,
        "burst_cap": 180,
        "pending": 30_000,
        "timer_cap": 300,
        "submit_seconds": 10,
    }
    add = parser.add_argument
    add("--quick", action="store_true", help="a small run (about 4 minutes)")
    add("--n", type=int, help="burst size (default 100,000; quick 5,000)")
    add("--rate", type=int, help="steady rate per second (default 5,000; quick 500)")
    add("--steady-seconds", type=float, help="steady duration (default 15 s; quick 5 s)")
    add("--steady-drain", type=float, help="wait for the steady tail (default 45 s)")
    add(
        "--burst-lead",
        type=float,
        help="longest wait for the timer to take the burst in before it falls due (120 s)",
    )
    add("--burst-cap", type=float, help="wait after the due second (default 180 s)")
    add(
        "--pending",
        type=int,
        help="pending schedules for the timer figures (default 30,000, extrapolated to "
        "1,000,000; quick 10,000)",
    )
    add("--timer-cap", type=float, help="wait for the timer to take them in (default 300 s)")
    add("--submit-seconds", type=float, help="each submission run (default 10 s; quick 5 s)")
    add(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)} (default: all)",
    )
    add("--keep-topics", action="store_true", help="keep the run's topics afterwards")
    args = parser.parse_args(argv)
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.only = [s for s in args.only.split(",") if s]
    unknown = set(args.only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return args


if __name__ == "__main__":
    configure("WARNING")
    asyncio.run(main(parse()))
