"""The bench's counting and its results: unique message ids, duplicates apart, topic growth,
and every table row's figure, ceiling and ratio in the JSON (pure logic, no timings)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench import report
from bench.burst import figures, first_by_id, topic_growth
from bench.harness import Seen, log_bytes

DUE = 1_800_000_000


def seen(mid: str, kind: str, after: float, at: float | None = None) -> Seen:
    return Seen(DUE + after, mid, kind, DUE, DUE + (after if at is None else at), None)


def test_first_by_id_keeps_the_first_of_each_id() -> None:
    events = [seen("a", "due", 0.1), seen("b", "due", 0.2), seen("a", "due", 0.3)]
    first, dups = first_by_id(events)
    assert [(s.message_id, round(s.received - DUE, 3)) for s in first] == [("a", 0.1), ("b", 0.2)]
    assert dups == 1


def test_burst_figures_count_unique_ids_and_duplicates_apart() -> None:
    dues = [seen("a", "due", 0.1), seen("b", "due", 0.2), seen("a", "due", 0.5)]
    outs = [
        seen("a", "delivered", 1.0),
        seen("a", "delivered", 2.0),
        seen("b", "delivered", 1.5),
        seen("b", "deferred", 1.2),
    ]
    f = figures(DUE, 2, dues, outs)
    assert f["due_events"] == 2 and f["due_duplicates"] == 1
    assert f["delivered"] == 2 and f["outcome_duplicates"] == 1 and f["delivered_events"] == 3
    assert math.isclose(f["last_due_event"], 0.2, abs_tol=1e-6)
    assert math.isclose(f["last_outcome"], 1.5, abs_tol=1e-6)
    assert f["early"] == 0


def test_burst_figures_missing_messages_are_unbounded() -> None:
    f = figures(DUE, 3, [seen("a", "due", 0.1)], [seen("a", "delivered", 1.0)])
    assert f["last_due_event"] is None and f["last_outcome"] is None
    assert math.isinf(f["delivery_lateness"]["max"])


def test_topic_growth() -> None:
    assert topic_growth({"x.due": 10}, {"x.due": 25, "x.dispatch": 7}) == {
        "x.dispatch": 7,
        "x.due": 15,
    }
    assert topic_growth(None, {"x": 1}) is None


def test_log_bytes_counts_log_segments_by_topic(tmp_path: Path) -> None:
    for name, size in (("b1.due-0", 100), ("b1.due-1", 50), ("b1.dispatch-0", 7), ("z.due-0", 9)):
        d = tmp_path / name
        d.mkdir()
        (d / "00000000000000000000.log").write_bytes(b"x" * size)
        (d / "00000000000000000000.index").write_bytes(b"\0" * 1000)  # preallocated index
    assert log_bytes(tmp_path, "b1.") == {"b1.due": 150, "b1.dispatch": 7}
    assert log_bytes(None, "b1.") is None
    assert log_bytes(tmp_path / "absent", "b1.") is None


def test_every_row_goes_into_the_json_with_its_ceiling_and_ratio(tmp_path: Path) -> None:
    r = {
        "hops": 3,
        "smtp_ceiling": {
            "messages": 1000,
            "message_bytes": 538,
            "connections": 32,
            "seconds": 0.1,
            "per_s": 10_000.0,
        },
        "raw_hop": {"hops": 1, "n": 1000, "arrived": 1000, "seconds": 0.2, "per_s": 5_000.0},
        "stages": {
            "stages": {
                "timer": {"n": 1000, "per_s": 2_500.0, "seconds": 0.4},
                "sender": {"n": 1000, "per_s": 1_000.0, "seconds": 1.0},
            }
        },
    }
    path = tmp_path / "r.json"
    report.write_json(r, path)
    figs = {f["figure"]: f for f in json.loads(path.read_text())["figures"]}
    timer = figs["stage alone: timer drains 1,000 per second (one relay hop)"]
    assert (timer["value"], timer["ceiling"], timer["ratio"]) == (2_500.0, 5_000.0, 0.5)
    sender = figs["stage alone: sender drains 1,000 per second (smtp-source)"]
    assert sender["ratio"] == 0.1
    assert any(f.startswith("ceiling: smtp-source") for f in figs)
    # the printed table carries the same ratios
    assert "0.50x" in report.table(r) and "0.10x" in report.table(r)


def test_the_soak_table_shows_growth_per_message() -> None:
    from bench.report import soak_table

    mb = 2**20
    soak = {
        "messages": 200_000,
        "checkpoint": 100_000,
        "rate_asked": 1_000,
        "seconds": 210.0,
        "complete": True,
        "at_checkpoint": {"timer": {"rss": 100 * mb, "disk": 10 * mb}},
        "at_end": {"timer": {"rss": 101 * mb, "disk": 10 * mb}},
        "growth_bytes_per_message": {"timer": {"rss": mb / 100_000, "disk": 0.0}},
    }
    text = soak_table(soak)
    assert "200,000 messages at 1,000/s" in text and "complete" in text
    row = next(line for line in text.splitlines() if line.startswith("timer"))
    assert "100.0M" in row and "101.0M" in row and "10.5" in row and "0.0" in row


def test_the_soak_shows_a_bounded_cache_flat_in_its_second_half() -> None:
    from bench.report import soak_table
    from bench.soak import growth

    mb = 2**20

    def reading(msgs: int, rss_mb: float) -> dict[str, Any]:
        return {"messages": msgs, "holdings": {"timer": {"rss": int(rss_mb * mb), "disk": 0}}}

    # grows until its cache is full at 300,000, then flat
    readings = [reading(k * 100_000, min(k, 3) * 100 + 200) for k in range(1, 11)]
    first, half, last = readings[0], readings[4], readings[-1]
    assert growth(first, last)["timer"]["rss"] == 200 * mb / 900_000
    assert growth(half, last)["timer"]["rss"] == 0.0
    soak = {
        "messages": 1_000_000,
        "checkpoint": 100_000,
        "rate_asked": 400,
        "seconds": 2600.0,
        "complete": True,
        "at_checkpoint": first["holdings"],
        "at_end": last["holdings"],
        "growth_bytes_per_message": growth(first, last),
        "half": 500_000,
        "growth_second_half": growth(half, last),
        "readings": readings,
    }
    lines = soak_table(soak).splitlines()
    assert "second half from 500,000" in lines[0]
    row = next(line for line in lines if line.startswith("timer"))
    assert row.split()[-2:] == ["0.0", "0.0"]
    assert any(line.split() == ["300,000", "500.0"] for line in lines)


def test_spread_lateness_is_measured_from_each_messages_own_second() -> None:
    from bench.report import spread_rows

    def at(mid: str, own: int, after: float) -> Seen:
        return Seen(own + after, mid, "delivered", own, own + after, None)

    outs = [at("a", DUE, 0.5), at("b", DUE + 30, 0.5), at("c", DUE + 60, 1.0)]
    f = figures(DUE, 3, [], outs)
    assert f["delivery_lateness"]["max"] == 61.0  # from the one due second
    assert f["delivery_lateness_own"]["max"] == 1.0  # from each own second
    f.update({"cap_seconds": 60, "spread_seconds": 60})
    burst = {"delivery_lateness": {"p50": 20.0, "p99": 40.0, "max": 41.0}}
    [lateness, counts] = spread_rows(f, burst)
    assert lateness.value == [0.5, f["delivery_lateness_own"]["p99"], 1.0]
    assert lateness.ceiling_value == 40.0 and lateness.ratio_value is not None
    assert counts.value == [3, 0, 0]
