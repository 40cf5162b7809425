"""Soak: many messages through the whole pipeline at a steady rate, and what each process holds
afterwards. Memory (RSS) and disk of every service are read once the first ``checkpoint``
messages have been delivered and again at the end; their growth per message between the two
is the figure: about zero when every piece of state is bounded (docs/operations.md, "State
over months").

The retention windows are shortened for the run (``SOAK_ENV``), so that what a month of
traffic would prune is pruned within the soak: the lifecycle projection's settled messages
and the sender's dedupe window after 60 s."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from bench.harness import Pipeline, dir_bytes, end_offsets, rss_of, wait_consumed
from bench.load import paced, scheduled
from schemas.codec import encode

TAG = "soak"
AHEAD = 2
#: retention shortened so that it applies within the soak (seconds)
SOAK_ENV = {"KAIROS_LIFECYCLE_RETENTION": "60", "KAIROS_DEDUPE_LOOKBACK": "60"}


def sqlite_in_use(path: Path) -> int:
    """Bytes of a SQLite database's pages in use: its file keeps its high-water mark (pages
    freed by pruning are reused, not returned), so the file size is not what it holds."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            free = db.execute("PRAGMA freelist_count").fetchone()[0]
            size = db.execute("PRAGMA page_size").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0
    return int((pages - free) * size)


def holdings(p: Pipeline) -> dict[str, dict[str, int]]:
    """RSS of each service process, and the bytes of its state on disk (ingest: the lifecycle
    projection's pages in use)."""
    state = p.base / "state"
    disk = {
        "timer": dir_bytes(state / "timer"),
        "ingest": sum(sqlite_in_use(f) for f in state.glob("lifecycle-*.sqlite3")),
        "validator": 0,
        "sender": 0,
    }
    return {
        service: {"rss": rss_of(proc.pid), "disk": disk.get(service, 0)}
        for service, proc in p.procs.items()
    }


async def drained(p: Pipeline, deadline: float) -> bool:
    """Until the timer has taken in everything written, and the sender has handled every
    dispatch (by their groups' committed offsets)."""
    for topic, group in (("schedule", "timer"), ("dispatch", "sender")):
        ends = await end_offsets(p.bootstrap, p.topic(topic))
        if await wait_consumed(p.bootstrap, p.settings.group(group), p.topic(topic), ends,
                               deadline) is None:  # fmt: skip
            return False
    return True


async def soak(
    p: Pipeline, account: str, n: int, per_s: int, checkpoint: int, drain: float
) -> dict[str, Any]:
    """``n`` messages at ``per_s`` a second, each due ``AHEAD`` s after it is written; the
    holdings after the first ``checkpoint`` of them (the pipeline drained), after each further
    ``checkpoint`` (under load) and after all (drained), and the growth per message from the
    first reading to the end and over the second half (a state bounded by a cache's size grows
    until the cache is full, then stays flat: the series shows where)."""

    def make(mid: str) -> tuple[bytes, bytes]:
        return mid.encode(), encode(scheduled(account, mid, int(time.time()) + AHEAD))

    started = time.time()
    readings: list[dict[str, Any]] = []
    complete = True
    written = 0
    while written < n:
        size = min(checkpoint, n - written)
        sent = await paced(
            p.bootstrap, p.topic("schedule"), per_s, size / per_s, make, f"{TAG}{len(readings)}"
        )
        written += len(sent)
        if not readings or written >= n:  # the first and the last reading: drained
            complete = await drained(p, time.monotonic() + drain) and complete
        readings.append({"messages": written, "holdings": holdings(p)})
    first, last = readings[0], readings[-1]
    half = min(readings, key=lambda r: abs(r["messages"] - n / 2))
    return {
        "messages": written,
        "checkpoint": first["messages"],
        "rate_asked": per_s,
        "seconds": round(time.time() - started, 1),
        "complete": complete,
        "at_checkpoint": first["holdings"],
        "at_end": last["holdings"],
        "growth_bytes_per_message": growth(first, last),
        "half": half["messages"],
        "growth_second_half": growth(half, last),
        "readings": readings,
        "env": SOAK_ENV,
    }


def growth(a: dict[str, Any], b: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Bytes per message each service's RSS and disk grew from reading ``a`` to ``b``."""
    msgs = max(1, b["messages"] - a["messages"])
    ha, hb = a["holdings"], b["holdings"]
    return {
        service: {what: (hb[service][what] - ha[service][what]) / msgs for what in ("rss", "disk")}
        for service in hb
        if service in ha
    }
