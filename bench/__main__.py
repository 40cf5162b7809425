"""``make bench``: one run, one broker, the pipeline next to the ceiling the broker allows.

    python -m bench [--quick] [--n N] [--rate R] [--steady-seconds S] [--pending P]

Uses ``KAIROS_KAFKA_BOOTSTRAP`` when set, else the local broker. Prints a table, writes
``bench/results/<timestamp>.json`` and a PNG of burst lateness. See docs/bench.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import platform
import time
import uuid
from pathlib import Path
from typing import Any

from bench import scenarios as sc
from bench.harness import Pipeline
from kairos.kafka.bootstrap import resolve_bootstrap
from kairos.logging import configure
from kairos.settings import KairosSettings

RESULTS = Path(__file__).parent / "results"


def fmt(value: Any, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.3f}{unit}" if abs(value) < 100 else f"{value:,.0f}{unit}"
    return f"{value:,}{unit}"


async def main(args: argparse.Namespace) -> dict[str, Any]:
    settings = KairosSettings()
    bootstrap = resolve_bootstrap(settings)
    partitions = settings.topic_partitions or 8
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "args": vars(args),
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
    }
    t0 = time.monotonic()
    print(f"bench: broker {bootstrap}, {partitions} partitions, burst {args.n}", flush=True)
    results["kafka_perf"] = sc.kafka_perf(settings, bootstrap, max(args.n, 100_000), 1024)
    print(f"  kafka perf tools: {results['kafka_perf']}", flush=True)
    relay_events = [
        sc.scheduled("acc", f"relay-{i}-{uuid.uuid4().hex[:4]}", 0) for i in range(args.n)
    ]
    results["raw_relay"] = await sc.raw_relay(bootstrap, partitions, relay_events)
    print(f"  raw 4-hop relay: {results['raw_relay']}", flush=True)

    p = Pipeline(bootstrap, partitions)
    await p.prepare()
    try:
        p.start("ingest", "timer", "validator", "sender")
        account, api_key = p.create_account()
        results["submission"] = await sc.submission(p, api_key, args.submit_seconds)
        print(f"  submission: {results['submission']}", flush=True)
        results["burst"] = await sc.burst(p, account, args.n)
        series = results["burst"].pop("lateness_series")
        print(f"  burst: {results['burst']}", flush=True)
        results["steady"] = await sc.steady(p, account, args.rate, args.steady_seconds)
        print(f"  steady: {results['steady']}", flush=True)
        results["timer_scale"] = await sc.timer_scale(p, account, args.pending)
        print(f"  timer scale: {results['timer_scale']}", flush=True)
    finally:
        p.stop()
    results["elapsed_seconds"] = time.monotonic() - t0
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    RESULTS.mkdir(exist_ok=True)
    png = RESULTS / f"{stamp}-burst-lateness.png"
    sc.chart(series, png)
    (RESULTS / f"{stamp}.json").write_text(json.dumps(results, indent=2, default=str))
    table(results)
    print(f"\nwrote {RESULTS / (stamp + '.json')} and {png} in {results['elapsed_seconds']:.0f}s")
    return results


def table(r: dict[str, Any]) -> None:
    b, relay, st, sub, scale = (
        r["burst"],
        r["raw_relay"],
        r["steady"],
        r["submission"],
        r["timer_scale"],
    )
    perf = r["kafka_perf"]
    rows = [
        ("burst: messages", fmt(b["n"]), "", ""),
        (
            "burst: last due event after the due second",
            fmt(b["last_due_after_due_second"], " s"),
            "",
            "",
        ),
        (
            "burst: last delivery after the due second",
            fmt(b["last_delivered_after_due_second"], " s"),
            fmt(relay["relay_seconds"], " s"),
            fmt((b["last_delivered_after_due_second"] or math.nan) / relay["relay_seconds"], "x"),
        ),
        (
            "burst: delivered / relayed by the sink",
            f"{b['delivered']:,} / {b['relayed_by_sink']:,}",
            "",
            "",
        ),
        (
            "burst: due lateness p50 / p99 / max",
            f"{fmt(b['lateness_p50'])} / {fmt(b['lateness_p99'])} / {fmt(b['lateness_max'])} s",
            "",
            "",
        ),
        ("burst: early (must be 0)", fmt(b["early"]), "", ""),
        (
            "steady: delivered per second (asked " + fmt(st["rate_asked"]) + ")",
            fmt(st["delivered_per_s"]),
            fmt(relay["relay_per_s"]),
            fmt((st["delivered_per_s"] or math.nan) / relay["relay_per_s"], "x"),
        ),
        (
            "steady: due lateness p50 / p99",
            f"{fmt(st['lateness_p50'])} / {fmt(st['lateness_p99'])} s",
            "",
            "",
        ),
        (
            "submission: POST /email per second (64 clients)",
            fmt(sub["requests_per_s"]),
            fmt(perf["producer_records_per_s"]),
            fmt(sub["requests_per_s"] / (perf["producer_records_per_s"] or math.nan), "x"),
        ),
        (
            "submission: latency p50 / p99",
            f"{fmt(sub['p50'] * 1000)} / {fmt(sub['p99'] * 1000)} ms",
            "",
            "",
        ),
        (
            "submission: SMTP messages per second (16 connections)",
            fmt(sub["smtp_per_s"]),
            fmt(perf["producer_records_per_s"]),
            fmt(
                (sub["smtp_per_s"] or math.nan) / (perf["producer_records_per_s"] or math.nan), "x"
            ),
        ),
        (
            f"timer: RSS bytes per pending ({fmt(scale['pending'])} pending over 30 days)",
            fmt(scale["rss_bytes_per_pending"]),
            "",
            "",
        ),
        ("timer: disk bytes per pending", fmt(scale["disk_bytes_per_pending"]), "", ""),
        (
            "timer: recovery after kill -9 (healthy / first due event)",
            f"{fmt(scale['recovery_healthy_seconds'], ' s')} / "
            f"{fmt(scale['recovery_first_due_seconds'], ' s')}",
            "",
            "",
        ),
        (
            "ceiling: ProducerPerformance / ConsumerPerformance records/s",
            f"{fmt(perf['producer_records_per_s'])} / {fmt(perf['consumer_records_per_s'])}",
            "",
            "",
        ),
    ]
    width = max(len(row[0]) for row in rows)
    print(f"\n{'figure':<{width}}  {'pipeline':>28}  {'ceiling (raw)':>16}  {'ratio':>8}")
    for name, value, ceiling, ratio in rows:
        print(f"{name:<{width}}  {value:>28}  {ceiling:>16}  {ratio:>8}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a small run (about 3 minutes)")
    parser.add_argument("--n", type=int, default=None, help="burst size (default 100,000)")
    parser.add_argument("--rate", type=int, default=None, help="steady rate (default 5,000/s)")
    parser.add_argument("--steady-seconds", type=int, default=None, help="default 10")
    parser.add_argument(
        "--pending",
        type=int,
        default=None,
        help="pending schedules for the timer-scale figures (default 100,000)",
    )
    parser.add_argument("--submit-seconds", type=float, default=None, help="default 15")
    args = parser.parse_args(argv)
    quick = args.quick
    args.n = args.n or (5_000 if quick else 100_000)
    args.rate = args.rate or (500 if quick else 5_000)
    args.steady_seconds = args.steady_seconds or (5 if quick else 10)
    args.pending = args.pending or (10_000 if quick else 100_000)
    args.submit_seconds = args.submit_seconds or (5 if quick else 15)
    return args


if __name__ == "__main__":
    configure("WARNING")
    asyncio.run(main(parse()))
