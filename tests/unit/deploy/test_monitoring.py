"""The alerting rules and the dashboard, checked offline: promtool accepts the rules, and
promtool's own rule tests show each alert firing on the series it is about (and staying quiet
on healthy ones); every dashboard panel has queries. That every metric they name is exported
by the running services is tests/integration/test_monitoring.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yaml"
DASHBOARD = DEPLOY / "grafana" / "kairos.json"
#: a metric of ours, as PromQL names it
METRIC = re.compile(r"\bkairos_[a-z_]+\b")


def rules() -> dict[str, Any]:
    document = yaml.safe_load(RULES.read_text())
    assert document["kind"] == "PrometheusRule"
    spec: dict[str, Any] = document["spec"]
    return spec


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p["targets"]]


def monitoring_metrics() -> set[str]:
    """Every metric of ours the rules and the dashboard query."""
    exprs = [r["expr"] for g in rules()["groups"] for r in g["rules"]] + dashboard_queries()
    return {name for e in exprs for name in METRIC.findall(e)}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must check the rules: promtool is missing (scripts/system-deps.sh)")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return found


def run(tmp_path: Path, *args: str) -> str:
    out = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    plain = tmp_path / "rules.yaml"
    plain.write_text(yaml.safe_dump(rules()))
    assert "SUCCESS: 6 rules found" in run(tmp_path, "check", "rules", str(plain))


#: promtool rule tests: each alert fires on the series it watches, not on healthy ones
RULE_TESTS = {
    "rule_files": ["rules.yaml"],
    "evaluation_interval": "1m",
    "tests": [
        {
            "interval": "1m",
            "input_series": [
                # partition 0 ticks every minute; partition 1 stops after 5 minutes
                {"series": 'kairos_timer_tick_seconds{partition="0"}', "values": "0+60x20"},
                {"series": 'kairos_timer_tick_seconds{partition="1"}', "values": "0+60x5 300x15"},
                {
                    "series": 'kairos_dead_letters_total{stage="sender",reason="undecodable"}',
                    "values": "0x10 1x10",
                },
                {
                    "series": 'kairos_events_total{service="sender",event="delivered"}',
                    "values": "0+100x40",
                },
                {
                    "series": 'kairos_events_total{service="sender",event="deferred"}',
                    "values": "0+20x40",
                },
                {
                    "series": 'kairos_events_total{service="sender",event="failed"}',
                    "values": "0x40",
                },
            ],
            "alert_rule_test": [
                {
                    "eval_time": "10m",
                    "alertname": "KairosTimerPartitionNotTicking",
                    "exp_alerts": [
                        {
                            "exp_labels": {"partition": "1", "severity": "page"},
                            "exp_annotations": {
                                "summary": "timer partition 1 has applied no tick for 5m 0s",
                                "runbook": "docs/operations.md#kairostimerpartitionnotticking",
                            },
                        }
                    ],
                },
                {
                    "eval_time": "12m",
                    "alertname": "KairosDeadLetters",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "stage": "sender",
                                "reason": "undecodable",
                                "severity": "ticket",
                            },
                            "exp_annotations": {
                                "summary": "sender set records aside (undecodable)",
                                "runbook": "docs/operations.md#kairosdeadletters",
                            },
                        }
                    ],
                },
                {"eval_time": "5m", "alertname": "KairosDeadLetters", "exp_alerts": []},
                {
                    "eval_time": "30m",
                    "alertname": "KairosDeferralRateHigh",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "ticket"},
                            "exp_annotations": {
                                "summary": "16.67% of delivery attempts deferred",
                                "runbook": "docs/operations.md#kairosdeferralratehigh",
                            },
                        }
                    ],
                },
            ],
        }
    ],
}


def test_each_alert_fires_on_what_it_watches(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules()))
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(RULE_TESTS))
    assert "SUCCESS" in run(tmp_path, "test", "rules", "tests.yaml")


def test_every_alert_has_a_runbook_in_the_operations_guide() -> None:
    guide = (DEPLOY.parent / "docs" / "operations.md").read_text()
    for rule in rules()["groups"][0]["rules"]:
        anchor = rule["annotations"]["runbook"].split("#")[1]
        assert f"### {rule['alert']}" in guide and anchor == rule["alert"].lower()


def test_every_panel_queries_something_of_ours() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len(panels) >= 10
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert METRIC.search(target["expr"]), (panel["title"], target["expr"])
    assert "kairos_pending_messages" in monitoring_metrics()
