"""deploy/kubernetes: the worker's manifests and the values for Restate's Helm chart.

The manifests are validated against the Kubernetes API schemas by `kubernetes-validate` (strict:
unknown fields are errors), offline; on top of that, the project's own wiring: which Service
reaches which pods, which Secret key each workload reads, that the balancer balances like the
local stack. The Helm values use only keys the chart has, and the Kubernetes objects the chart
copies from them verbatim (env, volumes, resources, the disruption budget) validate as such.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from devstack.components import Balancer
from devstack.config import SINGLE, StackConfig

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "deploy" / "kubernetes" / "report-chain.yaml"
RESTATE_VALUES = ROOT / "deploy" / "kubernetes" / "restate-values.yaml"
KUBERNETES_VERSION = "1.33.0"
# The top-level keys of the restate-helm chart's values.yaml (1.7.x) and the ones its templates read.
CHART_KEYS = {
    "replicaCount", "nameOverride", "version", "image", "imagePullSecrets", "serviceAccount", "podAnnotations",
    "podLabels", "podSecurityContext", "securityContext", "logging", "nodeName", "advertisedAddress", "env",
    "service", "resources", "storage", "extraInitContainers", "extraVolumes", "extraVolumeMounts",
    "identityPrivateKey", "serviceMonitor", "topologySpreadConstraints", "podDisruptionBudget", "nodeSelector",
    "tolerations", "command", "args",
}  # fmt: skip
NAMESPACE = "report-chain"


def documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(MANIFESTS.read_text()) if doc]


def find(kind: str, name: str) -> dict[str, Any]:
    for doc in documents():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name} in {MANIFESTS.name}")


def values() -> dict[str, Any]:
    data = yaml.safe_load(RESTATE_VALUES.read_text())
    assert isinstance(data, dict)
    return data


def validate(resource: dict[str, Any]) -> None:
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("doc", documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_manifest_is_a_valid_kubernetes_object(doc: dict[str, Any]) -> None:
    validate(doc)
    assert doc["metadata"].get("namespace") == NAMESPACE


def test_the_validator_rejects_what_kubernetes_would() -> None:
    broken = find("Deployment", "report-chain-worker")
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError, match="two"):
        validate(broken)
    broken = find("HorizontalPodAutoscaler", "report-chain-worker")
    broken["spec"]["minReplica"] = 2  # a typo: strict validation refuses unknown fields
    with pytest.raises(kubernetes_validate.ValidationError, match="minReplica"):
        validate(broken)


def test_the_worker_objects_are_wired_together() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents()}
    for wanted in [
        ("Deployment", "report-chain-worker"),
        ("Service", "report-chain-worker-pods"),
        ("PodDisruptionBudget", "report-chain-worker"),
        ("HorizontalPodAutoscaler", "report-chain-worker"),
        ("Secret", "restate-request-identity"),
    ]:
        assert wanted in kinds
    worker = find("Deployment", "report-chain-worker")
    labels = worker["spec"]["template"]["metadata"]["labels"]
    for selector in (
        worker["spec"]["selector"]["matchLabels"],
        find("Service", "report-chain-worker-pods")["spec"]["selector"],
        find("PodDisruptionBudget", "report-chain-worker")["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    hpa = find("HorizontalPodAutoscaler", "report-chain-worker")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "report-chain-worker"}
    assert hpa["minReplicas"] > find("PodDisruptionBudget", "report-chain-worker")["spec"]["minAvailable"]

    container = worker["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    port = int(env["WORKER_BIND"]["value"].rpartition(":")[2])
    assert [p["containerPort"] for p in container["ports"]] == [port]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    # The workers verify what Restate signs: the public half of the key the Helm values give Restate.
    identity = values()["identityPrivateKey"]
    assert env["RESTATE_IDENTITY_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == identity["secretName"]
    secret = find("Secret", identity["secretName"])
    assert {identity["keyName"], env["RESTATE_IDENTITY_KEYS"]["valueFrom"]["secretKeyRef"]["key"]} <= set(
        secret["stringData"]
    )
    llm = env["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert llm["key"] in find("Secret", llm["name"])["stringData"]
    # The image runs as the Dockerfile's user.
    assert worker["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001


def test_restate_calls_the_balancer_which_balances_like_the_local_stack() -> None:
    setup = find("Job", "report-chain-setup")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in setup["env"]}
    service = find("Service", "report-chain")
    host, port = re.fullmatch(r"http://([\w-]+):(\d+)", env["WORKER_URL"]).groups()  # type: ignore[union-attr]
    assert host == service["metadata"]["name"] and int(port) == service["spec"]["ports"][0]["port"]
    balancer = find("Deployment", "report-chain-balancer")
    assert service["spec"]["selector"].items() <= balancer["spec"]["template"]["metadata"]["labels"].items()
    # Restate's admin API is the chart's Service `<nameOverride>` in the same namespace.
    assert env["RESTATE_ADMIN_URL"] == f"http://{values()['nameOverride']}:9070"

    config = find("ConfigMap", "report-chain-balancer")["data"]["haproxy.cfg"]
    template = re.search(r"server-template \S+ (\d+) ([\w.-]+):(\d+)", config)
    assert template is not None
    assert template.group(2) == f"report-chain-worker-pods.{NAMESPACE}.svc.cluster.local"
    assert int(template.group(1)) >= find("HorizontalPodAutoscaler", "report-chain-worker")["spec"]["maxReplicas"]

    def policy(text: str) -> set[str]:
        skip = ("server", "server-template", "bind", "resolvers", "nameserver", "parse-resolv-conf", "hold")
        lines = {" ".join(line.split()) for line in text.splitlines()}
        return {
            re.sub(r" resolvers \w+ init-addr none", "", line)
            for line in lines
            if line and not line.startswith((*skip, "accepted_payload_size", "#"))
        }

    assert policy(config) == policy(Balancer(StackConfig.create(SINGLE, 2)).config())


@pytest.mark.tools
def test_the_balancer_config_is_valid_haproxy(tmp_path: Path) -> None:
    haproxy = shutil.which("haproxy")
    assert haproxy, "haproxy is not installed: run `make deps`"
    config = tmp_path / "haproxy.cfg"
    config.write_text(find("ConfigMap", "report-chain-balancer")["data"]["haproxy.cfg"])
    done = subprocess.run([haproxy, "-c", "-f", str(config)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_helm_values_use_only_the_charts_keys_and_valid_objects() -> None:
    data = values()
    assert set(data) <= CHART_KEYS, set(data) - CHART_KEYS
    pinned = json.loads((ROOT / "package.json").read_text())["dependencies"]["@restatedev/restate-server"]
    assert data["image"]["tag"] == pinned
    assert data["replicaCount"] == 3
    env = {e["name"]: e["value"] for e in data["env"]}
    assert env["RESTATE_DEFAULT_REPLICATION"] == "2" and env["RESTATE_BIFROST__DEFAULT_PROVIDER"] == "replicated"
    # The chart's headless Service is `<fullname>-cluster` on the node port.
    assert json.loads(env["RESTATE_METADATA_CLIENT__ADDRESSES"]) == [f"http://{data['nameOverride']}-cluster:5122"]
    assert env["RESTATE_AUTO_PROVISION"] == "false"
    # The chart's readiness probe needs the HTTP ingress; with it on, the workers verify Kafka sources.
    assert "http-ingress" in json.loads(env["RESTATE_ROLES"])
    assert find("ConfigMap", "report-chain")["data"]["VERIFY_KAFKA_SOURCE"] == "true"
    assert env["RESTATE_WORKER__SNAPSHOTS__DESTINATION"].startswith("s3://")
    mounts = {m["mountPath"] for m in data["extraVolumeMounts"]}
    assert str(Path(env["RESTATE_CONFIG"]).parent) in mounts

    # What the chart copies into its StatefulSet verbatim must be valid Kubernetes objects.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "restate-0"},
        "spec": {
            "containers": [
                {
                    "name": "restate",
                    "image": f"{data['image']['repository']}:{data['image']['tag']}",
                    "env": data["env"],
                    "volumeMounts": data["extraVolumeMounts"],
                    "resources": data["resources"],
                }
            ],
            "volumes": data["extraVolumes"],
        },
    }
    validate(pod)
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "restate"},
        "spec": {"selector": {"matchLabels": {"app": "restate"}}, **data["podDisruptionBudget"]},
    }
    validate(budget)
