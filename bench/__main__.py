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
import tempfile
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from bench import cpu, mta, report, submission
from bench.burst import burst
from bench.ceiling import HOPS, KafkaTools, RawRelay, kafka_perf
from bench.harness import (
    Broker,
    delete_topics,
    end_offsets,
    free_port,
    local_broker,
    running,
    wait_consumed,
)
from bench.load import build, event_size, mime_size
from bench.soak import SOAK_ENV, soak
from bench.steady import steady
from bench.timer_scale import timer_scale
from kairos.kafka.bootstrap import resolve_bootstrap
from kairos.logging import configure
from kairos.settings import KairosSettings
from schemas.registry import MESSAGE_PARTITIONS

RESULTS = Path(__file__).parent / "results"
SCENARIOS = (
    "ceiling", "submission", "steady", "burst", "spread", "large", "stages", "timer", "soak"
)  # fmt: skip
#: run only when asked for (``--only soak``): it takes as long as its messages need
OPT_IN = {"soak"}
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
        "record_bytes_large": event_size("64k"),
        "message_bytes": mime_size("1k"),
        "message_bytes_large": mime_size("64k"),
        "phase_seconds": {},
    }
    t0 = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="kairos-bench-"))
    say(f"bench {run}: broker {bootstrap}, {partitions} partitions, scenarios {','.join(only)}")

    async def phase(name: str, work: Awaitable[T]) -> T:
        started = time.monotonic()
        result = await work
        r["phase_seconds"][name] = round(time.monotonic() - started, 1)
        say(f"{name} done in {r['phase_seconds'][name]:.0f}s")
        return result

    tools = KafkaTools(settings, bootstrap)
    broker = local_broker(settings)
    pool = settings.relay_pool_size
    r["relay_pool_size"] = pool
    r["sink"] = args.sink
    r["cpu"] = {}
    # the raw counterparts' CPU per 1,000 messages, by message size: name -> ms per 1,000
    raw: dict[str, dict[str, float | None]] = {"1k": {}, "64k": {}, "hop alone": {}}
    r["cpu_raw"] = raw
    try:
        if "ceiling" in only:
            r["kafka_perf"] = await phase(
                "kafka perf tools",
                kafka_perf(tools, ours, partitions, rf, max(args.n, 50_000), r["record_bytes"]),
            )
            r["smtp_ceiling"] = await phase(
                "smtp ceiling",
                asyncio.to_thread(
                    mta.smtp_ceiling, scratch, free_port(), args.n, pool, mime_size("1k")
                ),
            )
            r["raw_relay"] = await phase(
                "raw relay burst",
                relay_burst(bootstrap, f"{ours}relay", partitions, rf, HOPS, broker, args, "1k"),
            )
            if "stages" in only:
                r["raw_hop"] = await phase(
                    "raw relay, one hop alone",
                    relay_burst(
                        bootstrap, f"{ours}hop", partitions, rf, 1, broker, args, "1k", args.stage_n
                    ),
                )
            if "large" in only:
                r["smtp_ceiling_large"] = await phase(
                    "smtp ceiling, 64 KiB",
                    asyncio.to_thread(
                        mta.smtp_ceiling, scratch, free_port(), args.large_n, pool, mime_size("64k")
                    ),
                )
                r["raw_relay_large"] = await phase(
                    "raw relay burst, 64 KiB",
                    relay_burst(
                        bootstrap,
                        f"{ours}large",
                        partitions,
                        rf,
                        HOPS,
                        broker,
                        args,
                        "64k",
                        args.large_n,
                    ),
                )
            if "steady" in only:
                relay = RawRelay(bootstrap, f"{ours}rsteady", partitions, rf)
                await relay.start()
                relay.go.write_text("0")
                try:
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
            fill_raw(r, raw)
        if only & {"submission", "steady"}:
            async with running(bootstrap, partitions, f"{pipes}a.", *ALL, relay=args.sink) as p:
                account, key = p.create_account()
                if "submission" in only:
                    window = cpu.Window(p.pids(broker)).start()
                    began = time.monotonic()
                    http = await phase(
                        "submission http", submission.http(p, key, args.submit_seconds)
                    )
                    smtp = await phase(
                        "submission smtp", submission.smtp(p, key, args.submit_seconds)
                    )
                    used, wall = window.stop(), time.monotonic() - began
                    r["submission"] = {
                        "http": http,
                        "smtp": smtp,
                        "raw": await phase(
                            "submission raw", submission.raw(p, args.submit_seconds)
                        ),
                    }
                    accepted = http["accepted"] + (smtp["accepted"] if smtp else 0)
                    r["cpu"]["submission"] = cpu.figures(used, accepted, raw["1k"], "1k", wall)
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
                    window = cpu.Window(p.pids(broker)).start()
                    began = time.monotonic()
                    r["steady"] = await phase(
                        "steady",
                        steady(p, account, args.rate, args.steady_seconds, args.steady_drain),
                    )
                    used, wall = window.stop(), time.monotonic() - began
                    r["cpu"]["steady"] = cpu.figures(
                        used, r["steady"]["written"], raw["1k"], "1k", wall, cpu.NO_INGEST
                    )
        for name, letter, size, n, alone, within in (
            ("burst", "b", "1k", args.n, False, 0),
            ("spread", "p", "1k", args.n, False, args.spread_within),
            ("large", "l", "64k", args.large_n, False, 0),
            ("stages", "s", "1k", args.stage_n, True, 0),
        ):
            if name not in only:
                continue
            async with running(
                bootstrap, partitions, f"{pipes}{letter}.", *ALL, relay=args.sink
            ) as p:
                account, _ = p.create_account()
                b = await phase(
                    name,
                    burst(
                        p, account, n, args.burst_lead, args.burst_cap, broker, size, alone, within
                    ),
                )
            r[name] = b
            kind = "hop alone" if alone else size
            if alone:
                for service, st in b["stages"].items():
                    keep = {service, "broker"} | ({"sink"} if service == "sender" else set())
                    used = {k: v for k, v in st["cpu_ms"].items() if k in keep}
                    r["cpu"][f"{name}: {service} alone"] = cpu.figures(
                        used, n, raw[kind], kind, st["seconds"]
                    )
            else:
                r["cpu"][f"{name}: intake"] = cpu.figures(
                    b["cpu_ms"]["intake"], n + b["probe_n"], raw[kind], kind, None, cpu.INTAKE
                )
                r["cpu"][f"{name}: firing"] = cpu.figures(
                    b["cpu_ms"]["firing"],
                    b["delivered"],
                    raw[kind],
                    kind,
                    b["firing_wall_seconds"],
                    cpu.NO_INGEST,
                )
        if "soak" in only:
            async with running(
                bootstrap, partitions, f"{pipes}k.", *ALL, relay=args.sink, env=SOAK_ENV
            ) as p:
                account, _ = p.create_account()
                r["soak"] = await phase(
                    "soak",
                    soak(p, account, args.soak_n, args.soak_rate, args.soak_checkpoint,
                         args.soak_drain),
                )  # fmt: skip
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
    report.write_json(r, RESULTS / f"{stamp}.json")
    try:
        drew = report.chart(r, png)
    except ImportError as e:  # matplotlib is a bench extra: the figures are written anyway
        say(f"no chart ({e}); pip install -e '.[bench]'")
        drew = False
    print()
    print(report.table(r))
    print()
    print(cpu.table(r["cpu"]))
    if "soak" in r:
        print()
        print(report.soak_table(r["soak"]))
    print()
    say(
        f"{r['elapsed_seconds']:.0f}s; wrote {RESULTS / (stamp + '.json')}"
        + (f" and {png}" if drew else "")
    )
    return r


async def relay_burst(
    bootstrap: str,
    prefix: str,
    partitions: int,
    rf: int,
    hops: int,
    broker: Broker,
    args: argparse.Namespace,
    size: str,
    n: int | None = None,
) -> dict[str, Any]:
    """The raw relay of ``hops`` hops, ``n`` (default the burst's) messages of ``size``."""
    relay = RawRelay(bootstrap, prefix, partitions, rf, hops, broker.pid)
    await relay.start()
    try:
        records = build("acc_relay", "relay", n or args.n, lambda i: 0, size)
        return await relay.burst(records, "relay", time.monotonic() + args.burst_cap)
    finally:
        relay.stop()


def fill_raw(r: dict[str, Any], raw: dict[str, dict[str, float | None]]) -> None:
    """The raw counterparts' CPU per 1,000 messages, from the ceiling's figures."""
    perf = (r.get("kafka_perf") or {}).get("producer_ms_per_1000")
    for kind, relay_key, smtp_key in (
        ("1k", "raw_relay", "smtp_ceiling"),
        ("64k", "raw_relay_large", "smtp_ceiling_large"),
        ("hop alone", "raw_hop", "smtp_ceiling"),
    ):
        relay = (r.get(relay_key) or {}).get("ms_per_1000", {})
        smtp = (r.get(smtp_key) or {}).get("ms_per_1000", {})
        raw[kind].update(
            {
                "relay hop": relay.get("relay hop"),
                "broker": relay.get("broker"),
                "bench": relay.get("bench"),
                "smtp-source": smtp.get("smtp-source"),
                "smtp-sink": smtp.get("smtp-sink"),
                "ProducerPerformance": perf,
            }
        )


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
        "large_n": 300,
        "stage_n": 2_000,
        "soak_n": 20_000,
        "soak_checkpoint": 5_000,
        "spread_within": 30,
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
        "large_n": 2_000,
        "stage_n": 20_000,
        "soak_n": 1_000_000,
        "soak_checkpoint": 100_000,
        "spread_within": 120,
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
    add(
        "--spread-within",
        type=int,
        help="the spread scenario's deliverWithin: the burst over this many seconds "
        "(default 120 s; quick 30 s)",
    )
    add("--large-n", type=int, help="messages of 64 KiB in the large scenario (2,000; quick 300)")
    add(
        "--stage-n",
        type=int,
        help="messages each stage drains alone in the stages scenario (20,000; quick 2,000)",
    )
    add(
        "--sink",
        choices=("postfix", "python"),
        default="postfix" if mta.available() else "python",
        help="the sender's relay: postfix (smtp-sink, C, discards; the default when Postfix is "
        "installed) or python (bench.sink, the counting sink)",
    )
    add("--submit-seconds", type=float, help="each submission run (default 10 s; quick 5 s)")
    add("--soak-n", type=int, help="messages in the soak (1,000,000; quick 20,000)")
    add("--soak-checkpoint", type=int, help="the soak's first reading (100,000; quick 5,000)")
    add("--soak-rate", type=int, default=1_000, help="the soak's messages per second (1,000)")
    add("--soak-drain", type=float, default=300, help="longest wait for the soak to settle")
    add(
        "--only",
        default=",".join(s for s in SCENARIOS if s not in OPT_IN),
        help=f"comma-separated subset of {','.join(SCENARIOS)} (default: all but "
        f"{', '.join(sorted(OPT_IN))})",
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
