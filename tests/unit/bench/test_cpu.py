"""The bench's CPU accounting: /proc/<pid>/stat parsing, deltas, per-1,000 figures, ratios and
the CPU table (pure logic; no timings asserted)."""

from __future__ import annotations

import os

import pytest

from bench import cpu
from bench.ceiling import marginal_ms_per_1000
from bench.mta import parse_counter

# a real line's shape: pid (comm) state ppid ... utime(14) stime(15) cutime cstime ...
STAT = (
    "4608 (java) S 1 4600 4600 0 -1 4194560 331093 0 16 0 {utime} {stime} 7 9 20 0 77 0 "
    "1000 65957768000 192289 18446744073709551615 1 1 0 0 0 0 0 3 16800972 0 0 0 17 1 0 0"
)


def test_parse_stat_reads_utime_and_stime() -> None:
    assert cpu.parse_stat(STAT.format(utime=4321, stime=123)) == (4321, 123)


def test_parse_stat_command_name_with_spaces_and_parentheses() -> None:
    line = STAT.format(utime=50, stime=7).replace("(java)", "(a (weird) name) x)")
    assert cpu.parse_stat(line) == (50, 7)


@pytest.mark.parametrize("text", ["", "1234 java S 1 2 3", "1 (x) S 1 2 3"])
def test_parse_stat_rejects_what_is_not_a_stat_line(text: str) -> None:
    with pytest.raises(ValueError):
        cpu.parse_stat(text)


def test_cpu_seconds_of_this_process_and_of_none() -> None:
    mine = cpu.cpu_seconds(os.getpid())
    assert mine is not None and mine >= 0
    assert cpu.cpu_seconds(2**22 + 12345) is None  # beyond pid_max: no such process


def test_snapshot_unknown_pid_is_none() -> None:
    snap = cpu.snapshot({"bench": os.getpid(), "broker": None})
    assert snap["broker"] is None and snap["bench"] is not None


def test_delta_ms() -> None:
    before = {"timer": 1.0, "sink": None, "sender": 5.0, "validator": 2.0}
    after = {"timer": 1.25, "sink": 3.0, "sender": 1.0, "validator": 2.0}
    assert cpu.delta_ms(before, after) == {
        "timer": 250.0,
        "sink": None,  # not known before
        "sender": None,  # restarted: a new process
        "validator": 0.0,
    }


def test_per_thousand_and_ratio() -> None:
    assert cpu.per_thousand(500.0, 2_000) == 250.0
    assert cpu.per_thousand(None, 2_000) is None
    assert cpu.per_thousand(500.0, 0) is None
    assert cpu.ratio(300.0, 100.0) == 3.0
    assert cpu.ratio(None, 100.0) is None
    assert cpu.ratio(1.0, 0.0) is None
    assert cpu.ratio(1.0, None) is None


def test_figures_pairs_each_process_with_its_counterpart() -> None:
    raw = {"relay hop": 50.0, "smtp-source": 20.0, "broker": 40.0, "ProducerPerformance": 5.0}
    ms = {"timer": 1000.0, "sender": 400.0, "broker": None, "ingest": 200.0, "sink": 10.0}
    f = cpu.figures(ms, 10_000, raw, "1k", 3.0)
    assert f["messages"] == 10_000 and f["raw"] == "1k" and f["wall_seconds"] == 3.0
    timer = f["processes"]["timer"]
    assert timer == {
        "cpu_ms": 1000.0,
        "ms_per_1000": 100.0,
        "counterpart": "relay hop",
        "counterpart_ms_per_1000": 50.0,
        "ratio": 2.0,
    }
    assert f["processes"]["sender"]["ratio"] == 2.0
    assert f["processes"]["broker"]["ratio"] is None
    assert f["processes"]["ingest"]["counterpart"] == "ProducerPerformance"
    # the sink's counterpart was not measured
    assert f["processes"]["sink"]["counterpart_ms_per_1000"] is None
    assert f["processes"]["sink"]["ratio"] is None


def test_figures_without_ingest_counterpart() -> None:
    f = cpu.figures(
        {"ingest": 200.0}, 1_000, {"ProducerPerformance": 5.0}, "1k", None, cpu.NO_INGEST
    )
    assert f["processes"]["ingest"]["counterpart"] is None
    assert f["processes"]["ingest"]["ratio"] is None


def test_table_lists_processes_in_pipeline_order() -> None:
    raw = {"relay hop": 50.0, "smtp-source": 20.0}
    entry = cpu.figures(
        {"bench": 1.0, "sender": 400.0, "timer": 1000.0, "relay hop 2": 3.0}, 1_000, raw, "1k"
    )
    rows = cpu.rows({"burst: firing": entry})
    assert [r[1] for r in rows] == ["timer", "sender", "bench", "relay hop 2"]
    assert rows[0] == ("burst: firing (1,000)", "timer", "1,000", "relay hop", "50.0", "20.00x")
    assert rows[1][2:] == ("400", "smtp-source", "20.0", "20.00x")
    lines = cpu.table({"burst: firing": entry}).splitlines()
    assert lines[0].startswith("scenario (messages)")
    assert set(lines[1]) <= {"-", " "}
    assert len(lines) == 2 + 4


def test_rows_show_na_for_unknown() -> None:
    entry = cpu.figures({"timer": None}, 1_000, {}, "1k")
    [(scenario, name, mine, other, theirs, ratio)] = cpu.rows({"x": entry})
    assert (scenario, name, mine, other, theirs, ratio) == (
        "x (1,000)",
        "timer",
        "n/a",
        "relay hop",
        "n/a",
        "",
    )


def test_marginal_cost_takes_the_fixed_cost_off() -> None:
    assert marginal_ms_per_1000(1_500.0, 3_500.0, 100_001) == pytest.approx(20.0)
    assert marginal_ms_per_1000(1_500.0, 1_400.0, 1_001) == 0.0
    assert marginal_ms_per_1000(1_500.0, 3_500.0, 1) is None


def test_smtp_sink_counter() -> None:
    out = b"\rsess=1 quit=0 mesg=0\rsess=32 quit=31 mesg=19999\rsess=32 quit=32 mesg=20000\r"
    assert parse_counter(out) == 20_000
    assert parse_counter(b"") == 0
