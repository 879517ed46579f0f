"""k8s/: `kubectl kustomize` renders the dev overlay and every object validates offline.

Core kinds are checked (strict: unknown fields are errors) with kubernetes-validate's bundled
schemas, for the newest Kubernetes it knows and for the kubectl's own minor version; the
prometheus-operator CRDs (ServiceMonitor, PrometheusRule) against the vendored CRD schemas in
tests/k8s_schemas/.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner
from kubernetes_validate.utils import latest_version
from servers import require_binary

from featurewatch.services.monitor.alerts_cli import alerts

ROOT = Path(__file__).parents[3]
SCHEMAS = Path(__file__).parents[2] / "k8s_schemas"
CRDS = {("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule_v1.json",
        ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor_v1.json"}
K8S_VERSIONS = (latest_version(), "1.32.0")


def kustomize(path: Path) -> list[dict]:
    out = subprocess.run([require_binary("kubectl"), "kustomize", str(path)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module")
def dev() -> list[dict]:
    return kustomize(ROOT / "k8s" / "overlays" / "dev")


def validate(doc: dict) -> None:
    schema = CRDS.get((doc["apiVersion"], doc["kind"]))
    if schema is not None:
        jsonschema.validate(doc, json.loads((SCHEMAS / schema).read_text()))
        return
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def test_dev_overlay_validates(dev):
    kinds = sorted({doc["kind"] for doc in dev})
    assert kinds == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Job", "Namespace",
                     "PersistentVolumeClaim", "PrometheusRule", "Service", "ServiceMonitor",
                     "StatefulSet"]
    for doc in dev:
        validate(doc)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "featurewatch-dev", doc["metadata"]["name"]


def test_validation_rejects_broken_objects(dev):
    deployment = next(d for d in dev if d["kind"] == "Deployment")
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    rule = next(d for d in dev if d["kind"] == "PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    with pytest.raises(jsonschema.ValidationError):
        validate(rule)
    monitor = next(d for d in dev if d["kind"] == "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["scheme"] = "gopher"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_services_have_native_probes_resources_and_persistence(dev):
    deployments = by_kind(dev, "Deployment")
    for name in ("featurewatch-inference", "featurewatch-monitor"):
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert "grpc" in container["readinessProbe"] and "grpc" in container["livenessProbe"]
        assert container["resources"]["requests"] and container["resources"]["limits"]
    monitor = deployments["featurewatch-monitor"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in monitor["env"]}
    assert env["FEATUREWATCH_MONITOR_CONSUMER_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.name"
    redis = by_kind(dev, "StatefulSet")["featurewatch-redis"]
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert "noeviction" in redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert set(by_kind(dev, "HorizontalPodAutoscaler")) == set(deployments)
    dashboards = by_kind(dev, "ConfigMap")["featurewatch-grafana-dashboard"]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboards["data"]["featurewatch.json"])["uid"] == "featurewatch"


def test_service_monitor_selects_both_metrics_ports(dev):
    selector = by_kind(dev, "ServiceMonitor")["featurewatch"]["spec"]["selector"]["matchLabels"]
    scraped = [s for s in by_kind(dev, "Service").values()
               if selector.items() <= s["metadata"]["labels"].items()]
    assert sorted(s["metadata"]["name"] for s in scraped) == ["featurewatch-inference",
                                                              "featurewatch-monitor"]
    for service in scraped:
        assert "metrics" in {p["name"] for p in service["spec"]["ports"]}


@pytest.mark.parametrize("where", ["base", "overlays/dev"])
def test_checked_in_alerts_match_their_flags(tmp_path, where):
    directory = ROOT / "k8s" / where
    result = CliRunner().invoke(alerts, [
        "render", "--flags", str(directory / "flags.yaml"), "--out", str(tmp_path),
        "--rule-label", "prometheus=k8s", "--rule-label", "role=alert-rules"])
    assert result.exit_code == 0, result.output
    for path in tmp_path.iterdir():
        assert (directory / "alerts" / path.name).read_text() == path.read_text(), \
            f"re-render k8s/{where}/alerts (see the comment in its flags.yaml)"


def test_base_renders_too():
    docs = kustomize(ROOT / "k8s" / "base")
    for doc in docs:
        validate(doc)
