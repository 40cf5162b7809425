"""The fault suite: under load, each fault in turn on a pipeline of its own, and then the proof
by unique message id that nothing accepted was lost, delivered early or twice, that nothing
refused was delivered, and that every service is healthy again by itself.

``make test`` runs the short form (outages of 30 s, light load); ``make chaos`` the full
trials (``KAIROS_CHAOS=long``: the broker down 60 s and 120 s, frozen 30 s, heavier and
longer load).
What each check means: docs/operations.md."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from kairos.kafka.local import LocalKafka
from tests.chaos.harness import FAULTS, TrialConfig, ensure_broker, long_trials, run_trial

pytestmark = pytest.mark.kafka

SHORT = TrialConfig(rate=20, before_seconds=4, after_seconds=8, drain_timeout=60)
SHORT_FORM = {
    "broker-stopped": replace(SHORT, outage_seconds=30),
    "broker-frozen": replace(SHORT, outage_seconds=30),
    "services-killed": replace(SHORT, killed_seconds=2),
    "broker-killed": SHORT,
}
LONG = TrialConfig(
    rate=30, before_seconds=10, after_seconds=30, drain_timeout=120, health_timeout=120
)
LONG_FORM = {
    "broker-stopped": replace(LONG, outage_seconds=60),
    "broker-stopped-120s": replace(LONG, outage_seconds=120, health_timeout=180),
    "broker-frozen": replace(LONG, outage_seconds=30),
    "services-killed": replace(LONG, killed_seconds=5),
    "broker-killed": LONG,
}


TRIALS = LONG_FORM if long_trials() else SHORT_FORM


@pytest.mark.timeout(900 if long_trials() else 300)
@pytest.mark.parametrize("trial", list(TRIALS))
def test_nothing_lost_under_fault(trial: str, chaos_broker: LocalKafka, tmp_path: Path) -> None:
    fault = trial.removesuffix("-120s")
    assert fault in FAULTS
    ensure_broker(chaos_broker)
    report, evidence = run_trial(trial, chaos_broker, tmp_path, TRIALS[trial], fault)
    text = report.table() + (f"\n  log evidence:\n{evidence}" if evidence else "")
    print(text)
    (tmp_path / "report.txt").write_text(text + "\n")
    if os.environ.get("KAIROS_CHAOS_REPORT"):
        with open(os.environ["KAIROS_CHAOS_REPORT"], "a") as out:
            out.write(text + "\n\n")
    assert not report.failures, text
