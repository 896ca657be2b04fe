"""Deploy files: Dockerfile (hadolint), Kubernetes manifests (schemas), compose, Prometheus."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lapo.paths import REPO_ROOT

BIN = Path(sys.executable).parent
K8S = sorted((REPO_ROOT / "deploy/k8s").glob("*.yaml"))


@pytest.mark.slow  # starts a process
def test_dockerfile_passes_hadolint() -> None:
    subprocess.run([str(BIN / "hadolint"), str(REPO_ROOT / "Dockerfile")], check=True)


@pytest.mark.parametrize("path", [p for p in K8S if "servicemonitor" not in p.name],
                         ids=lambda p: p.name)
@pytest.mark.slow  # starts a process
def test_k8s_manifest_matches_the_schema(path: Path) -> None:
    subprocess.run([str(BIN / "kubernetes-validate"), "--strict", str(path)], check=True)


def test_servicemonitor_scrapes_the_service_port() -> None:
    """A CRD (no bundled schema): check it points at the Service's port and /metrics."""
    monitor = yaml.safe_load((REPO_ROOT / "deploy/k8s/servicemonitor.yaml").read_text())
    service = yaml.safe_load((REPO_ROOT / "deploy/k8s/service.yaml").read_text())
    assert monitor["kind"] == "ServiceMonitor"
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_deployment_probes_and_gpu() -> None:
    dep = yaml.safe_load((REPO_ROOT / "deploy/k8s/deployment.yaml").read_text())
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_compose_references_exist() -> None:
    """No Docker engine or compose plugin here: check the structure and every mounted file."""
    compose = yaml.safe_load((REPO_ROOT / "deploy/compose.yaml").read_text())
    assert set(compose["services"]) == {"lapo", "prometheus", "grafana"}
    named = set(compose.get("volumes") or {})
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in named or (REPO_ROOT / "deploy" / source).exists(), source


def test_compile_cache_is_a_volume_everywhere() -> None:
    """The compile cache (LAPO_CACHE_DIR=/cache in the image) outlives a container: a
    volume in the Dockerfile, a named volume in compose, a claim in Kubernetes."""
    docker = (REPO_ROOT / "Dockerfile").read_text()
    assert "LAPO_CACHE_DIR=/cache" in docker and '"/cache"' in docker
    compose = yaml.safe_load((REPO_ROOT / "deploy/compose.yaml").read_text())
    mounts = dict(v.split(":")[:2][::-1] for v in compose["services"]["lapo"]["volumes"])
    assert mounts["/cache"] in compose["volumes"]
    dep = yaml.safe_load((REPO_ROOT / "deploy/k8s/deployment.yaml").read_text())
    pod = dep["spec"]["template"]["spec"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/cache")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    claim = volume["persistentVolumeClaim"]["claimName"]
    claims = [yaml.safe_load(p.read_text()) for p in K8S if p.name.startswith("pvc")]
    assert claim in {c["metadata"]["name"] for c in claims if c["kind"] ==
                     "PersistentVolumeClaim"}


@pytest.mark.slow  # starts a process
def test_prometheus_config_and_rules() -> None:
    # `check config` also checks the rule files the config names (alerts.yml).
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (scripts/install-test-deps.sh)")
    subprocess.run([promtool, "check", "config",
                    str(REPO_ROOT / "deploy/prometheus/prometheus.yml")], check=True)
