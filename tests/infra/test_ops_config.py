"""Failures show in the metrics by the right amounts (model errors, fallbacks, breaker state), and the
Grafana dashboard and Prometheus alert rules in infra/ query only metrics and labels turnflow exports."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from pathlib import Path

import psycopg
import yaml

from infra.config.endpoints import default_gguf
from infra.config.settings import REPO_ROOT
from infra.deploy import chart_check
from infra.runtime.resources import Resources
from infra.telemetry.setup import SERVICE_WORKER
from tests.support.api_harness import REAL_MODEL, ApiServer, isolated_settings, model_entry, real_model_entry
from tests.support.fake_model import ScriptedModelServer
from tests.support.prometheus import Samples, delta, scrape, total
from tests.support.services import Services, psycopg_url
from workers.ingest import build_ingest_worker

GRAFANA = REPO_ROOT / "infra" / "deploy" / "helm" / "turnflow" / "files" / "dashboard.json"
ALERTS = REPO_ROOT / "infra" / "deploy" / "helm" / "turnflow" / "files" / "alerts.yaml"
# A metric name, not a label matcher (gen_ai_token_type="output" is a label).
METRIC = re.compile(r"\b((?:turnflow|gen_ai|temporal|http_server)_[a-z_]+)\b(?!\s*(?:=|!=|=~|!~))")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
SELECTOR_LABEL = re.compile(r"[{,]\s*([a-z_]+)\s*(?:=|!=|=~|!~)")


def expressions() -> list[str]:
    dashboard = json.loads(GRAFANA.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    rules = yaml.safe_load(ALERTS.read_text())
    exprs += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    return exprs + autoscaler_queries()


def autoscaler_queries() -> list[str]:
    """What the Helm chart's autoscalers read from turnflow's own metrics: the API's HPA (open streams
    per pod) and the chat workers' KEDA trigger (workflow slots in use)."""
    rendered = chart_check.render({}, "default")
    queries = [
        m["pods"]["metric"]["name"]
        for hpa in rendered.of_kind("HorizontalPodAutoscaler")
        for m in hpa["spec"]["metrics"]
        if m["type"] == "Pods"
    ]
    queries += [
        t["metadata"]["query"]
        for so in rendered.of_kind("ScaledObject")
        for t in so["spec"]["triggers"]
        if t["type"] == "prometheus" and "worker" in so["metadata"]["name"]
    ]
    assert any("open_streams" in q for q in queries) and any("slots" in q for q in queries), queries
    return queries


def labels_of(samples: Samples, name: str) -> set[str]:
    return {label for (n, labels), _ in samples.items() if n == name for label, _ in labels}


async def test_failures_are_counted_and_dashboards_query_what_is_exported(
    services: Services, tmp_path: Path
) -> None:
    models = {
        "gpu": model_entry("{scripted}", fidelity=10, fallback=[REAL_MODEL]),
        REAL_MODEL: real_model_entry(),
    }
    async with ScriptedModelServer("failing-gpu") as scripted:
        models["gpu"]["endpoints"] = [scripted.url]
        scripted.script.status = 500
        settings = isolated_settings(services, tmp_path, models=models, model_path=default_gguf())
        # An ingest worker (the turn retrieves from a document), traced and metered as a worker is:
        # its activities' schedule-to-start latency is on the dashboard.
        res = await Resources.open(settings, service=SERVICE_WORKER)
        async with build_ingest_worker(res), ApiServer(settings) as api:
            doc = {"text": "Greetings are said with a wave in Zorblat.", "source": f"{uuid.uuid4()}.txt"}
            assert (await api.client.post("/v1/documents", json=doc)).status_code == 201
            before = await scrape(api)
            conv = await api.conversation()
            resp = await api.client.post(
                f"/v1/conversations/{conv}/messages",
                json={"content": "Say hi.", "max_tokens": 4, "stream": False},
            )
            assert resp.status_code == 200 and resp.json()["model"] == REAL_MODEL, resp.text
            limited = f"limited-{uuid.uuid4().hex[:8]}"
            headers = await api.headers_for(limited)
            with psycopg.connect(psycopg_url(services.endpoints.database_url)) as conn:
                limits = '{"requests_per_min": 1}'
                conn.execute("UPDATE tenants SET settings = %s::jsonb WHERE name = %s", (limits, limited))
            codes = [(await api.client.get("/v1/models", headers=headers)).status_code for _ in range(2)]
            assert codes == [200, 429]
            # The SDK's metrics (the ingest activity's latency among them) reach ours only when its
            # buffer is next drained, seconds later on busy cores: wait for what the dashboards query.
            wanted = {n for expr in expressions() for n in METRIC.findall(expr)}
            deadline = time.monotonic() + 30
            after = await scrape(api)
            while wanted - {name for name, _ in after} and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                after = await scrape(api)
        await res.close()

    # Two attempts at the GPU model failed with HTTP 500 (the second opened its circuit: two in a
    # row), then the turn fell back to the real model.
    assert delta(before, after, "turnflow_model_errors_total", model="gpu", error_type="500") == 2
    assert delta(before, after, "turnflow_model_fallbacks_total", from_model="gpu", to_model=REAL_MODEL) == 1
    assert total(after, "turnflow_model_breaker_state", model="gpu", server_address=scripted.url) == 2  # open
    assert delta(before, after, "gen_ai_client_operation_duration_seconds_count", error_type="500") == 2

    exported = {name for name, _ in after}
    for expr in expressions():
        names = set(METRIC.findall(expr))
        assert names, expr
        missing = names - exported
        assert not missing, f"{expr}: not exported: {missing}"
        labels = set().union(*(labels_of(after, n) for n in names))
        used = {x.strip() for group in GROUPING.findall(expr) for x in group.split(",") if x.strip()}
        used |= set(SELECTOR_LABEL.findall(expr))
        assert used - {"le"} <= labels, f"{expr}: labels {used - labels - {'le'}} are on none of {names}"
