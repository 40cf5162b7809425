"""CPU per message, per process: utime + stime of each process (``/proc/<pid>/stat``) read
before and after a scenario, as milliseconds per 1,000 messages, next to the same figure of
its raw counterpart measured in the same run.

On a shared machine rates move with the neighbours' load; the CPU a process spends per message
hardly does, so that is the figure to compare (and its ratio to the raw counterpart's).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

#: clock ticks per second of utime/stime (``getconf CLK_TCK``; 100 on Linux)
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

#: a pipeline process -> the raw process it is compared with (a key of the raw figures)
COUNTERPART = {
    "ingest": "ProducerPerformance",
    "timer": "relay hop",
    "validator": "relay hop",
    "sender": "smtp-source",
    "sink": "smtp-sink",
    "broker": "broker",
    "bench": "bench",
}
#: the counterparts where ingest only folds the topics (its projection), taking no submissions
NO_INGEST = {k: v for k, v in COUNTERPART.items() if k != "ingest"}
#: while the timer takes schedules in, only its figure has a counterpart (the bench writing the
#: schedules, and the broker taking them, come before the raw relay's clock starts)
INTAKE = {"timer": "relay hop"}
#: the order processes are listed in
ORDER = ("ingest", "timer", "validator", "sender", "sink", "broker", "bench")


def parse_stat(text: str) -> tuple[int, int]:
    """(utime, stime) in clock ticks from the text of ``/proc/<pid>/stat``.

    The second field (the command name) is in parentheses and may itself hold spaces and
    parentheses, so the fields are counted from the last ``)``: utime and stime are fields 14
    and 15 of the line (``proc(5)``)."""
    end = text.rfind(")")
    if end < 0:
        raise ValueError("not a /proc/<pid>/stat line: no ')' after the command name")
    fields = text[end + 1 :].split()
    # fields[0] is field 3 (state): field k is fields[k - 3]
    if len(fields) < 13:
        raise ValueError(f"not a /proc/<pid>/stat line: {len(fields)} fields after the name")
    return int(fields[11]), int(fields[12])


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) ``pid`` has used; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            utime, stime = parse_stat(f.read())
    except (OSError, ValueError):
        return None
    return (utime + stime) / TICKS


def snapshot(pids: Mapping[str, int | None]) -> dict[str, float | None]:
    """CPU seconds of each named process now (None: unknown or gone)."""
    return {name: (cpu_seconds(pid) if pid else None) for name, pid in pids.items()}


def delta_ms(
    before: Mapping[str, float | None], after: Mapping[str, float | None]
) -> dict[str, float | None]:
    """CPU milliseconds each process used between two snapshots (None when either is
    missing, or the process was replaced: a negative delta)."""
    out: dict[str, float | None] = {}
    for name in after:
        a, b = before.get(name), after[name]
        out[name] = None if a is None or b is None or b < a else (b - a) * 1000
    return out


def per_thousand(ms: float | None, messages: int | None) -> float | None:
    """CPU milliseconds per 1,000 messages."""
    if ms is None or not messages:
        return None
    return ms * 1000 / messages


def ratio(value: float | None, ceiling: float | None) -> float | None:
    """``value / ceiling``; None when either is missing or the ceiling is not positive."""
    if value is None or ceiling is None or ceiling <= 0:
        return None
    r = value / ceiling
    return None if math.isnan(r) else r


class Window:
    """CPU of a set of processes over one stretch of a scenario: ``start()``, then ``stop()``
    (a window may be stopped once; ``figures`` turns it into the results' entry)."""

    def __init__(self, pids: Mapping[str, int | None]) -> None:
        self.pids = dict(pids)
        self.before: dict[str, float | None] = {}
        self.ms: dict[str, float | None] = {}

    def start(self) -> Window:
        self.before = snapshot(self.pids)
        return self

    def stop(self) -> dict[str, float | None]:
        self.ms = delta_ms(self.before, snapshot(self.pids))
        return self.ms


def figures(
    ms: Mapping[str, float | None],
    messages: int,
    raw: Mapping[str, float | None],
    raw_label: str,
    wall_seconds: float | None = None,
    counterparts: Mapping[str, str] = COUNTERPART,
) -> dict[str, Any]:
    """One scenario's CPU entry of the results: each process's milliseconds and milliseconds
    per 1,000 ``messages``, with its counterpart's figure from ``raw`` (name -> ms per 1,000)
    and the ratio (``counterparts``: process -> raw name; a process left out has none)."""
    procs: dict[str, Any] = {}
    for name, used in ms.items():
        mine = per_thousand(used, messages)
        other = counterparts.get(name.split(" ")[0])
        theirs = raw.get(other) if other else None
        procs[name] = {
            "cpu_ms": used,
            "ms_per_1000": mine,
            "counterpart": other,
            "counterpart_ms_per_1000": theirs,
            "ratio": ratio(mine, theirs),
        }
    return {
        "messages": messages,
        "wall_seconds": wall_seconds,
        "raw": raw_label,
        "processes": procs,
    }


def _order(name: str) -> tuple[int, str]:
    base = name.split(" ")[0]
    return (ORDER.index(base) if base in ORDER else len(ORDER), name)


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def rows(cpu: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str, str, str, str, str]]:
    """(scenario, process, ms per 1,000, counterpart, its ms per 1,000, ratio) for every
    process of every scenario."""
    out = []
    for scenario, entry in cpu.items():
        procs = entry.get("processes", {})
        for name in sorted(procs, key=_order):
            p = procs[name]
            r = p.get("ratio")
            out.append(
                (
                    f"{scenario} ({entry['messages']:,})",
                    name,
                    _fmt(p.get("ms_per_1000")),
                    p.get("counterpart") or "",
                    _fmt(p.get("counterpart_ms_per_1000")) if p.get("counterpart") else "",
                    f"{r:.2f}x" if r is not None else "",
                )
            )
    return out


def table(cpu: Mapping[str, Mapping[str, Any]]) -> str:
    """The CPU table: milliseconds of CPU per 1,000 messages, per process and scenario."""
    header = (
        "scenario (messages)",
        "process",
        "CPU ms / 1,000",
        "raw counterpart",
        "its ms / 1,000",
        "ratio",
    )
    lines = [header, *rows(cpu)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = []
    for i, line in enumerate(lines):
        text.append(
            "  ".join(
                cell.ljust(widths[j]) if j in (0, 1, 3) else cell.rjust(widths[j])
                for j, cell in enumerate(line)
            ).rstrip()
        )
        if i == 0:
            text.append("  ".join("-" * w for w in widths))
    return "\n".join(text)
