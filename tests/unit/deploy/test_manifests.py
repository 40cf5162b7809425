"""The deploy files: generated ones match the code, and every rendered Kubernetes object is
valid against the Kubernetes schemas (offline, kubernetes-validate)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kairos.deploy import ROOT, generated
from schemas.registry import TOPICS

KUSTOMIZE = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.32"
#: CRDs kubernetes-validate has no schema for: checked structurally below
CRDS = {"KafkaTopic", "ServiceMonitor"}


def test_generated_files_match_the_code() -> None:
    for path, text in generated().items():
        assert path.read_text() == text, f"{path} drifted: run `kairos deploy generate`"


def render(target: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must render the manifests: kubectl is missing (scripts/system-deps.sh)")
        pytest.skip("kubectl is not installed (apt-get install kubectl)")
    out = subprocess.run(
        [kubectl, "kustomize", str(target)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.parametrize("target", ["base", "overlays/example"])
def test_rendered_objects_are_valid(target: str) -> None:
    objects = render(KUSTOMIZE / target)
    kinds = {o["kind"] for o in objects}
    assert {
        "Deployment",
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
        "ConfigMap",
        "Secret",
        "Job",
        "ServiceMonitor",
        "HorizontalPodAutoscaler",
    } <= kinds
    for obj in objects:
        if obj["kind"] in CRDS:
            assert obj["apiVersion"].endswith(("/v1beta2", "/v1")) and obj["spec"]
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    assert {o["metadata"]["name"] for o in workloads} == {
        "kairos-ingest",
        "kairos-timer",
        "kairos-validator",
        "kairos-sender",
    }
    for w in workloads:
        pod = w["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        assert container["args"][:1] == ["run"]
        assert "readinessProbe" in container and "resources" in container
        assert container["resources"]["limits"] and container["resources"]["requests"]


def test_overlay_adds_a_kafkatopic_per_registry_topic() -> None:
    objects = render(KUSTOMIZE / "overlays" / "example")
    topics = [o for o in objects if o["kind"] == "KafkaTopic"]
    assert sorted(t["spec"]["topicName"] for t in topics) == sorted(
        f"kairos.{s.name}" for s in TOPICS
    )
    assert all(t["metadata"]["namespace"] == "mail" for t in topics)
    assert {t["metadata"]["labels"]["strimzi.io/cluster"] for t in topics} == {"prod-kafka"}
