"""Every metric the dashboard (deploy/grafana/kairos.json) and the alerts
(deploy/prometheus/rules.yaml) name is exported by the running services: a renamed metric
breaks this test, not the operator's dashboard."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.integration.conftest import Stack
from tests.unit.deploy.test_monitoring import monitoring_metrics

pytestmark = pytest.mark.kafka

TYPE_LINE = re.compile(r"^# TYPE (\S+) (\w+)$", re.MULTILINE)


def exported(stack: Stack) -> set[str]:
    """Every sample name the four services' /metrics can show."""
    urls = [f"{stack.http}/metrics"] + [
        f"http://127.0.0.1:{stack.health_port(s)}/metrics" for s in ("timer", "validator", "sender")
    ]
    names: set[str] = set()
    for url in urls:
        text = httpx.get(url, timeout=30).text
        for name, kind in TYPE_LINE.findall(text):
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            if kind == "counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
    return names


def test_every_metric_the_dashboard_and_the_alerts_use_is_exported(stack: Stack) -> None:
    stack.start("sink", "ingest", "timer", "validator", "sender")
    names = exported(stack)
    wanted = monitoring_metrics()
    assert len(wanted) >= 8
    assert wanted - names == set()
    assert "kairos_definitely_not_a_metric" not in names  # the scrape is not vacuous
