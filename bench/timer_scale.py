"""Timer scale: memory and disk per pending schedule, and recovery after ``kill -9``.

Pending schedules are spread over 30 days (none falls due during the bench) and written in two
halves; the timer's RSS (``/proc/<pid>/status`` VmRSS) and the size of its state directory
(RocksDB) are read after each half has been taken in, so the per-pending figures are the
growth between the halves (the process's fixed cost drops out). The changelog topics that
back the timer's tables are measured on the broker.

Then the timer is killed with SIGKILL, a message due one second after its restart is written,
and the timer is started again: the figures are the seconds from the restart until
``/healthz`` answers 200 and until that message's due event arrives.
"""

from __future__ import annotations

import math
import signal
import time
from typing import Any

from bench.ceiling import KafkaTools
from bench.harness import Pipeline, TopicWatch, dir_bytes, end_offsets, wait_consumed
from bench.load import build, produce
from schemas.registry import TOPICS

TAG = "scale"
PROBE = "probe"
SPAN = 30 * 86_400
#: the figure the brief asks about
TARGET = 1_000_000


async def take_in(
    p: Pipeline, account: str, n: int, offset: int, total: int, until: float
) -> float:
    """Write ``n`` pending schedules (the ``offset``-th onwards of ``total`` spread over 30
    days) and wait until the timer has them; seconds it took (inf: not by ``until``)."""
    now = int(time.time())
    records = build(account, TAG, n, lambda i: now + 3_600 + ((offset + i) * SPAN) // total)
    started = time.monotonic()
    await produce(p.bootstrap, p.topic("schedule"), records)
    del records
    ends = await end_offsets(p.bootstrap, p.topic("schedule"))
    done = await wait_consumed(
        p.bootstrap, p.settings.group("timer"), p.topic("schedule"), ends, until
    )
    return time.monotonic() - started if done is not None else math.inf


async def timer_scale(
    p: Pipeline, tools: KafkaTools, account: str, pending: int, cap: float
) -> dict[str, Any]:
    until = time.monotonic() + cap
    rss0, disk0 = p.rss("timer"), dir_bytes(p.timer_state_dir)
    half = pending // 2
    first = await take_in(p, account, half, 0, pending, until)
    rss1, disk1 = p.rss("timer"), dir_bytes(p.timer_state_dir)
    second = await take_in(p, account, pending - half, half, pending, until)
    rss2, disk2 = p.rss("timer"), dir_bytes(p.timer_state_dir)
    changelogs = [p.topic(s.name) for s in TOPICS if s.internal and "timer" in s.producers]
    topic_bytes = tools.topic_bytes(changelogs)
    rss_per = (rss2 - rss1) / (pending - half)
    disk_per = (disk2 - disk1) / (pending - half)
    changelog_per = sum(topic_bytes.values()) / pending

    # kill -9, a message due right after the restart, restart
    p.kill("timer", signal.SIGKILL)
    watch = TopicWatch(p.bootstrap, p.topic("due"), PROBE)
    await watch.start()
    due = int(time.time()) + 2
    await produce(p.bootstrap, p.topic("schedule"), build(account, PROBE, 1, lambda i: due))
    restart = time.time()
    p.start("timer")
    healthy = time.time() - restart
    await watch.until(lambda: len(watch.seen) >= 1, time.monotonic() + 120)
    await watch.stop()
    first_due = watch.seen[0].received - restart if watch.seen else None
    return {
        "pending": pending,
        "intake_per_s": pending / (first + second),
        "rss_bytes": {"start": rss0, "half": rss1, "all": rss2},
        "disk_bytes": {"start": disk0, "half": disk1, "all": disk2},
        "rss_bytes_per_pending": rss_per,
        "rss_bytes_per_pending_overall": (rss2 - rss0) / pending,
        "disk_bytes_per_pending": disk_per,
        "changelog_bytes": topic_bytes,
        "changelog_bytes_per_pending": changelog_per,
        "extrapolated": pending < TARGET,
        f"rss_bytes_at_{TARGET}": rss2 + rss_per * (TARGET - pending),
        f"disk_bytes_at_{TARGET}": disk2 + disk_per * (TARGET - pending),
        f"intake_seconds_for_{TARGET}": TARGET * (first + second) / pending,
        "recovery_healthy_seconds": healthy,
        "recovery_due_seconds": first_due,
        "recovery_probe_due_after_restart": due - restart,
        "session_timeout_seconds": p.settings.session_timeout,
    }
