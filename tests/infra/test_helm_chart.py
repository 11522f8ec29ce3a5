"""The Helm chart (infra/deploy/helm/turnflow), offline: every profile renders and validates against
the Kubernetes and CRD schemas (infra/deploy/chart_check.py, which `make lint` runs too), and what the
chart says agrees with what turnflow reads: its env vars are settings, a production process accepts
them, the model registry it renders loads with turnflow's own policy loader, each autoscaler watches
the queue its workers poll, and the values the schema must refuse are refused.

No Kubernetes API server can run here: nothing is applied, and the operators (KEDA, CloudNativePG,
temporal-worker-controller) never see these objects; their CRD schemas stand in for them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.config.policy import Policy, load_policy
from infra.config.settings import REPO_ROOT, Settings
from infra.deploy import chart_check
from infra.deploy.chart_check import Rendered, profiles, render

PROFILES = profiles()
TURNFLOW_COMPONENTS = ("api", "worker-chat", "worker-batch", "worker-ingest", "migrations")
# What the Secrets the chart names would hold (placeholders: the values are the user's).
SECRET_VALUES = {
    "url": "postgresql+psycopg://turnflow:pw@db.internal:5432/turnflow?sslmode=verify-full",
    "keys": "k1:" + "A" * 43 + "=",
    "username": "turnflow",
    "password": "pw",
    "api-key": "temporal-cloud-key",
    "token": "model-token",
    "secret": "webhook-secret",
}
REDIS_SECRET = "rediss://cache.internal:6379/0"


def setting_names() -> set[str]:
    """Every environment variable Settings reads: TURNFLOW_<field>, and the aliases some fields take."""
    names = set()
    for field_name, field in Settings.model_fields.items():
        names.add(f"TURNFLOW_{field_name.upper()}")
        alias = field.validation_alias
        names.update(c for c in getattr(alias, "choices", [alias]) if isinstance(c, str))
    return names


@pytest.fixture(scope="module")
def rendered() -> dict[str, Rendered]:
    return {name: render(values, name) for name, values in PROFILES.items()}


def test_every_profile_renders_and_validates_offline() -> None:
    assert {"default", "minimal", "gpu-vllm", "enterprise-onprem"} <= set(PROFILES)
    assert list(chart_check.problems()) == []


def pod_specs(r: Rendered) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(object, pod spec) of every workload the chart renders."""
    for doc in r.docs:
        kind = doc["kind"]
        if kind in ("Deployment", "StatefulSet", "Job", "WorkerDeployment"):
            yield doc, doc["spec"]["template"]["spec"]


def turnflow_containers(r: Rendered) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for doc, spec in pod_specs(r):
        labels = doc["spec"]["template"]["metadata"]["labels"]
        if labels.get("app.kubernetes.io/component") in TURNFLOW_COMPONENTS:
            for container in spec["containers"]:
                yield labels["app.kubernetes.io/component"], spec, container


def environment(r: Rendered, container: dict[str, Any], overlay: Path) -> dict[str, str]:
    """The container's environment as the kubelet would give it: Secrets read, $(VAR) expanded."""
    env: dict[str, str] = {}
    for var in container["env"]:
        if "value" in var:
            value = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], str(var["value"]))
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            value = REDIS_SECRET if "redis" in ref["name"] else SECRET_VALUES[ref["key"]]
        env[var["name"]] = value
    env["TURNFLOW_POLICY_OVERLAY_FILE"] = str(overlay)
    return env


def overlay_of(r: Rendered, tmp_path: Path) -> Path:
    configmap = r.named("ConfigMap", f"{chart_check.RELEASE}-policy")
    path = tmp_path / f"{r.profile}-overlay.yaml"
    path.write_text(configmap["data"]["overlay.yaml"])
    return path


def rendered_policy(r: Rendered, tmp_path: Path) -> Policy:
    """The policy a pod of this release runs under: the image's temporal.yaml with the chart's overlay."""
    return load_policy(REPO_ROOT / "temporal.yaml", overlay_of(r, tmp_path))


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_setting_the_chart_sets_exists_and_production_accepts_them(
    profile: str, rendered: dict[str, Rendered], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = rendered[profile]
    overlay = overlay_of(r, tmp_path)
    seen = set()
    for component, spec, container in turnflow_containers(r):
        names = [v["name"] for v in container["env"]]
        assert len(names) == len(set(names)), f"{component}: an env var is set twice: {names}"
        unknown = {n for n in names if n.startswith("TURNFLOW_")} - setting_names()
        assert not unknown, f"{component}: not turnflow settings: {unknown}"
        env = environment(r, container, overlay)
        if r.values.get("temporal", {}).get("versioning", {}).get(
            "mode"
        ) == "controller" and component.startswith("worker-"):
            # What temporal-worker-controller injects into the pods of each version it runs.
            wd = next(d for d in r.of_kind("WorkerDeployment") if d["spec"]["template"]["spec"] is spec)
            env["TEMPORAL_DEPLOYMENT_NAME"] = f"{chart_check.NAMESPACE}/{wd['metadata']['name']}"
            env["TEMPORAL_WORKER_BUILD_ID"] = "v1-5c7d9f"
        for name in [k for k in os.environ if k.startswith(("TURNFLOW_", "TEMPORAL_"))]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        assert settings.environment == "production"
        assert settings.redis_cluster == bool(r.values.get("redis", {}).get("external", {}).get("cluster"))
        policy = load_policy(settings.policy_file, settings.policy_overlay_file)
        if component.startswith("worker-"):
            assert settings.kinds == (component.removeprefix("worker-"),)
        seen.add(component)
        assert policy.models
    assert {"api", "worker-chat", "migrations"} <= seen


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_the_model_registry_is_the_chart_s_pools(
    profile: str, rendered: dict[str, Rendered], tmp_path: Path
) -> None:
    r = rendered[profile]
    policy = rendered_policy(r, tmp_path)
    values = chart_check.chart().merge_values(r.values)
    pools = [
        {
            **values["inference"]["poolDefaults"],
            **p,
            "model": {**values["inference"]["poolDefaults"]["model"], **p["model"]},
        }
        for p in values["inference"]["pools"]
        if p.get("enabled", True)
    ]
    assert set(policy.models) == {p["name"] for p in pools}
    services = {s["metadata"]["name"]: s for s in r.of_kind("Service")}
    for pool in pools:
        spec = policy.models[pool["name"]]
        # The version recorded on every reply is the artifact's pin, never a moving name.
        model = pool["model"]
        assert spec.version == (model["revision"] or model["ociRef"].rpartition("@")[2] or model["version"])
        assert spec.provider == pool["engine"]
        (endpoint,) = spec.endpoints
        host, port = endpoint.removeprefix("http://").split(":")
        assert host in services, f"{endpoint}: no such Service"
        assert int(port) in [p["port"] for p in services[host]["spec"]["ports"]]
        deployment = r.named("Deployment", host)
        assert deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == int(
            port
        )
    assert dict(policy.task_queues) == values["temporal"]["taskQueues"]


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_each_scaled_object_watches_the_queue_its_workers_poll(
    profile: str, rendered: dict[str, Rendered], tmp_path: Path
) -> None:
    r = rendered[profile]
    policy = rendered_policy(r, tmp_path)
    controller = bool(r.of_kind("WorkerDeployment"))
    if controller:
        # Per version: the controller fills the ScaledObject in for each build's Deployment.
        scalers = [
            (t["spec"]["workerDeploymentRef"]["name"], t["spec"]["template"])
            for t in r.of_kind("WorkerResourceTemplate")
        ]
        targets = {d["metadata"]["name"]: d for d in r.of_kind("WorkerDeployment")}
    else:
        scalers = [(s["spec"]["scaleTargetRef"]["name"], s) for s in r.of_kind("ScaledObject")]
        targets = {d["metadata"]["name"]: d for d in r.of_kind("Deployment")}
    watched = 0
    for target, scaler in scalers:
        triggers = [t for t in scaler["spec"]["triggers"] if t["type"] == "temporal"]
        if not triggers:
            continue
        (trigger,) = triggers
        (container,) = targets[target]["spec"]["template"]["spec"]["containers"]
        kind = next(v["value"] for v in container["env"] if v["name"] == "TURNFLOW_WORKER_KINDS")
        meta = trigger["metadata"]
        assert meta["taskQueue"] == policy.queue(kind), target
        assert set(meta["queueTypes"].split(",")) <= {"workflow", "activity", "nexus"} and meta["queueTypes"]
        if controller:
            assert meta["workerDeploymentName"] == meta["workerDeploymentBuildId"] == meta["namespace"] == ""
        watched += 1
        if kind == "chat":
            # Backlog alone is late for interactive turns: warm replicas, and slot use leads.
            assert scaler["spec"]["minReplicaCount"] > 0
            if profile == "default":
                slots = [t for t in scaler["spec"]["triggers"] if t["type"] == "prometheus"]
                assert slots and policy.queue("chat") in slots[0]["metadata"]["query"]
    assert watched >= 1


def test_the_schema_and_the_chart_refuse_what_cannot_work() -> None:
    pool = {
        "name": "big",
        "engine": "vllm",
        "model": {"id": "meta-llama/Llama-3.1-8B-Instruct", "revision": "a" * 40},
    }
    assert render({"inference": {"pools": [pool]}}).of_kind("Deployment")  # the base case is fine
    refused = {
        # why: (values, the path the schema names)
        "an engine it does not run": (
            {"inference": {"pools": [{**pool, "engine": "sglang"}]}},
            "/inference/pools/0/engine",
        ),
        "a moving revision": (
            {"inference": {"pools": [{**pool, "model": {"id": "x", "revision": "main"}}]}},
            "/inference/pools/0/model/revision",
        ),
        "weights by tag": (
            {"inference": {"pools": [{**pool, "model": {"id": "x", "ociRef": "reg/w:latest"}}]}},
            "/inference/pools/0/model/ociRef",
        ),
        "no model pool": ({"inference": {"pools": []}}, "/inference/pools"),
        "an unknown versioning mode": (
            {"temporal": {"versioning": {"mode": "blue-green", "deploymentName": "t"}}},
            "/temporal/versioning/mode",
        ),
        "queue types KEDA does not know": (
            {"workers": {"chat": {"autoscaling": {"queueTypes": "workflows"}}}},
            "/workers/chat/autoscaling/queueTypes",
        ),
        "a typo in a top-level key": ({"worker": {}}, "worker"),
        "a TLS waiver for an unknown service": (
            {"temporal": {"tlsWaived": "postgress"}},
            "/temporal/tlsWaived",
        ),
        "an image digest that is not one": ({"image": {"digest": "latest"}}, "/image/digest"),
        "a drain shorter than the API's grace": (
            {"api": {"terminationGracePeriodSeconds": 5}},
            "/api/terminationGracePeriodSeconds",
        ),
        "a Postgres the chart cannot run": ({"postgres": {"mode": "rds"}}, "/postgres/mode"),
        "a placeholder that would outrank real pods": (
            {"warmPool": {"priorityValue": 10}},
            "/warmPool/priorityValue",
        ),
    }
    for values, path in refused.values():
        with pytest.raises(Exception, match=re.escape(path)):
            render(values)
    # What the schema cannot say, the chart's validations do.
    chart_refuses = {
        "two sources of weights": (
            {"inference": {"pools": [{**pool, "model": {"id": "x", "revision": "a" * 40, "pvc": "w"}}]}},
            "exactly one of revision",
        ),
        "a PVC without a version": (
            {"inference": {"pools": [{**pool, "model": {"id": "x", "pvc": "w"}}]}},
            "need a version",
        ),
        "the eager worker under the controller": (
            {"temporal": {"versioning": {"mode": "controller", "deploymentName": "turnflow"}}},
            "api.eagerWorker",
        ),
        "every pool disabled": (
            {"inference": {"pools": [{**pool, "enabled": False}]}},
            "at least one model pool",
        ),
    }
    for values, message in chart_refuses.values():
        with pytest.raises(Exception, match=message):
            render(values)


def test_processes_leave_within_their_grace_and_probes_ask_the_right_routes(
    rendered: dict[str, Rendered],
) -> None:
    shutdown = load_policy(REPO_ROOT / "temporal.yaml").shutdown
    r = rendered["default"]
    api = r.named("Deployment", f"{chart_check.RELEASE}-api")["spec"]["template"]["spec"]
    (container,) = api["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert api["terminationGracePeriodSeconds"] > pre_stop + shutdown.api_grace.total_seconds()
    for kind in ("chat", "batch", "ingest"):
        worker = r.named("Deployment", f"{chart_check.RELEASE}-worker-{kind}")["spec"]["template"]["spec"]
        assert worker["terminationGracePeriodSeconds"] > shutdown.worker_grace.total_seconds()
        assert worker["containers"][0]["command"] == ["python", "-m", "workers.main"]
    # Every turnflow pod: non-root, read-only root, a writable /tmp only.
    for _component, spec, container in turnflow_containers(r):
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}


def test_gpu_pools_get_gpus_shared_memory_startup_time_and_warm_nodes(rendered: dict[str, Rendered]) -> None:
    r = rendered["gpu-vllm"]
    vllm = r.named("Deployment", f"{chart_check.RELEASE}-inference-llama-8b")["spec"]["template"]["spec"]
    (engine,) = vllm["containers"]
    assert engine["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert vllm["runtimeClassName"] == "nvidia"
    shm = next(v for v in vllm["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["medium"] == "Memory"
    startup = engine["startupProbe"]
    assert (
        startup["httpGet"]["path"] == "/health"
        and startup["periodSeconds"] * startup["failureThreshold"] >= 600
    )
    weights = next(v for v in vllm["volumes"] if v["name"] == "models")
    assert weights["image"]["reference"].split("@")[1].startswith("sha256:")
    scaler = r.named("ScaledObject", f"{chart_check.RELEASE}-inference-llama-8b")
    assert "vllm:num_requests_waiting" in scaler["spec"]["triggers"][0]["metadata"]["query"]
    (priority,) = r.of_kind("PriorityClass")
    assert priority["value"] < 0 and priority["preemptionPolicy"] == "Never"
    placeholder = r.named("Deployment", f"{chart_check.RELEASE}-placeholder-llama-8b")
    assert placeholder["spec"]["replicas"] == 2
    hold = placeholder["spec"]["template"]["spec"]
    assert hold["priorityClassName"] == priority["metadata"]["name"]
    assert hold["containers"][0]["resources"] == engine["resources"]
    # A TGI pool pinned to a Hub revision passes it to the launcher.
    tgi = rendered["enterprise-onprem"].named("Deployment", f"{chart_check.RELEASE}-inference-qwen-7b")
    args = tgi["spec"]["template"]["spec"]["containers"][0]["args"]
    assert any(re.fullmatch(r"--revision=[0-9a-f]{40}", a) for a in args), args


def test_network_policies_deny_by_default_and_only_turn_runners_reach_models(
    rendered: dict[str, Rendered],
) -> None:
    for name in ("default", "enterprise-onprem"):
        r = rendered[name]
        policies = {
            p["metadata"]["name"].removeprefix(f"{chart_check.RELEASE}-"): p["spec"]
            for p in r.of_kind("NetworkPolicy")
        }
        deny = policies["default-deny"]
        assert deny["podSelector"]["matchLabels"] == {"app.kubernetes.io/instance": chart_check.RELEASE}
        assert (
            set(deny["policyTypes"]) == {"Ingress", "Egress"}
            and "ingress" not in deny
            and "egress" not in deny
        )
        (source,) = policies["model-pools"]["ingress"][0]["from"]
        assert source["podSelector"]["matchLabels"]["turnflow.dev/reaches-models"] == "true"
        api_labels = r.named("Deployment", f"{chart_check.RELEASE}-api")["spec"]["template"]["metadata"][
            "labels"
        ]
        eager = r.values.get("api", {}).get("eagerWorker", True)
        assert api_labels["turnflow.dev/reaches-models"] == str(eager).lower()


def test_the_alert_rules_and_dashboard_ship_from_one_file(rendered: dict[str, Rendered]) -> None:
    r = rendered["gpu-vllm"]
    (rule,) = r.of_kind("PrometheusRule")
    alerts = yaml.safe_load((chart_check.CHART / "files" / "alerts.yaml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]
    dashboard = r.named("ConfigMap", f"{chart_check.RELEASE}-dashboard")
    assert (
        dashboard["data"]["turnflow.json"].strip()
        == (chart_check.CHART / "files" / "dashboard.json").read_text().strip()
    )


def test_the_payload_key_the_install_guide_makes_is_one_turnflow_reads() -> None:
    from infra.runtime.payload_codec import parse_keys

    done = subprocess.run(
        [str(Path(sys.executable).parent / "turnflow"), "codec", "keygen"],
        capture_output=True,
        text=True,
        check=True,
    )
    ((key_id, key),) = parse_keys(done.stdout.strip())
    assert len(key) == 32 and key_id.startswith("k")
    assert "turnflow codec keygen" in (REPO_ROOT / "docs" / "deploy.md").read_text()
