"""One service under load on a pipeline of its own, for profiling a step before and after it.

    python -m bench.alone ingest|intake|firing|sender [--n N] [--seconds S] [--spy FILE]

- ``ingest``: ``POST /email`` from 64 clients for ``--seconds`` (ingest alone);
- ``intake``: ``--n`` schedules due tomorrow written at once, until the timer has them;
- ``firing``: ``--n`` schedules due in one second, from that second to the last due event;
- ``sender``: ``--n`` dispatches piled up while the sender is stopped (SIGSTOP), then drained
  to Postfix's ``smtp-sink`` from a fresh start.

Prints the rate and the service's CPU per 1,000 (``/proc``); with ``--spy``, ``py-spy``
records the service meanwhile (raw format, 50 Hz) into FILE. Uses the broker ``make bench``
would (``KAIROS_KAFKA_BOOTSTRAP``, else the local one).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import submission
from bench.cpu import cpu_seconds
from bench.harness import Pipeline, end_offsets, wait_consumed
from bench.load import build, produce
from kairos.kafka.bootstrap import resolve_bootstrap
from kairos.settings import KairosSettings

ACCOUNT = "acct-alone"


async def total(p: Pipeline, topic: str) -> int:
    return sum((await end_offsets(p.bootstrap, p.topic(topic))).values())


async def until_total(p: Pipeline, topic: str, n: int, within: float) -> float:
    """Seconds until ``topic`` holds ``n`` records (at most ``within``)."""
    started = time.monotonic()
    while await total(p, topic) < n and time.monotonic() - started < within:
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def take_in(p: Pipeline, n: int, due: int) -> float:
    """Write ``n`` schedules due at ``due``; seconds until the timer has them all."""
    started = time.monotonic()
    await produce(p.bootstrap, p.topic("schedule"), build(ACCOUNT, "alone", n, lambda i: due))
    ends = await end_offsets(p.bootstrap, p.topic("schedule"))
    group, topic = p.settings.group("timer"), p.topic("schedule")
    await wait_consumed(p.bootstrap, group, topic, ends, time.monotonic() + 300)
    return time.monotonic() - started


async def measured(
    p: Pipeline, service: str, spy: str | None, work: Callable[[], Awaitable[tuple[float, int]]]
) -> None:
    """Run ``work`` (returning its seconds and messages), reading ``service``'s CPU around
    it and recording it with py-spy when asked."""
    pid = p.pids()[service]
    assert pid is not None
    recorder = None
    if spy:
        # beside this interpreter (the project's environment), else on the PATH
        local = Path(sys.executable).with_name("py-spy")
        tool = str(local) if local.exists() else (shutil.which("py-spy") or "py-spy")
        recorder = await asyncio.create_subprocess_exec(
            tool, "record", "-p", str(pid), "-r", "50", "-f", "raw", "-o", spy,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
    before = cpu_seconds(pid) or 0.0
    seconds, n = await work()
    used = (cpu_seconds(pid) or 0.0) - before
    if recorder is not None:
        recorder.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
        await recorder.wait()
    print(
        f"{service}: {n:,} in {seconds:.2f} s = {n / seconds:,.0f}/s; "
        f"{1e6 * used / max(n, 1):,.0f} ms CPU per 1,000"
    )


async def main(args: argparse.Namespace) -> None:
    bootstrap = resolve_bootstrap(KairosSettings())
    relay = "postfix" if args.scenario == "sender" else "python"
    p = Pipeline(bootstrap, 2, f"alone{int(time.time())}.", relay=relay)
    await p.prepare()
    try:
        if args.scenario == "ingest":
            p.start("ingest")
            p.wait_healthy("ingest")
            _, key = p.create_account()
            await submission.http(p, key, 3)  # warm

            async def post() -> tuple[float, int]:
                r: dict[str, Any] = await submission.http(p, key, args.seconds)
                print(f"latency {r['latency']}")
                return r["seconds"], r["accepted"]

            await measured(p, "ingest", args.spy, post)
            return
        if args.scenario == "sender":
            services = ("ingest", "timer", "validator", "sender")
            p.start(*services)
            for s in services:
                p.wait_healthy(s)
            account, _ = p.create_account()
            p.pause("sender")
            due = int(time.time()) + 10 + args.n // 1000
            schedules = build(account, "alone", args.n, lambda i: due)
            await produce(p.bootstrap, p.topic("schedule"), schedules)
            await until_total(p, "dispatch", args.n, 300)
            base = await total(p, "outcomes")

            async def drain() -> tuple[float, int]:
                p.resume("sender")
                return await until_total(p, "outcomes", base + args.n, 300), args.n

            await measured(p, "sender", args.spy, drain)
            return
        p.start("timer")
        p.wait_healthy("timer")
        await take_in(p, 2000, int(time.time()) + 86_400)  # warm
        if args.scenario == "intake":

            async def intake() -> tuple[float, int]:
                return await take_in(p, args.n, int(time.time()) + 86_400), args.n

            await measured(p, "timer", args.spy, intake)
            return
        due = int(time.time()) + 15 + args.n // 1000
        await take_in(p, args.n, due)
        await asyncio.sleep(max(0.0, due - time.time()))

        async def fire() -> tuple[float, int]:
            return await until_total(p, "due", args.n, 300), args.n

        await measured(p, "timer", args.spy, fire)
    finally:
        p.stop()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.alone", description=__doc__)
    parser.add_argument("scenario", choices=("ingest", "intake", "firing", "sender"))
    parser.add_argument("--n", type=int, default=30_000, help="messages (not for ingest)")
    parser.add_argument("--seconds", type=float, default=20, help="ingest: seconds of load")
    parser.add_argument("--spy", help="record the service with py-spy into this file")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
