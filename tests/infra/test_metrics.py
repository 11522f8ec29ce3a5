"""Prometheus metrics move by exactly what known traffic did: turns, tokens, cost, time to first token,
cache hits, rate-limit refusals; breaker states and the Temporal SDK's own metrics are exported."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import pytest

from infra.runtime.resources import Resources
from tests.support.api_harness import ApiServer, isolated_settings, real_model_entry
from tests.support.prometheus import delta, scrape, total
from tests.support.services import Services, db_rows, free_port, psycopg_url
from workers.ingest import build_ingest_worker


async def test_metrics_move_by_what_known_traffic_did(services: Services, tmp_path: Path) -> None:
    # A model of this test's own (the real server under a new name) makes the GenAI series exact,
    # whatever other tests' turns are still doing in this process.
    model = f"probe-{uuid.uuid4().hex[:6]}"
    entry = real_model_entry(cost={"input_per_1k": 0.5, "output_per_1k": 2.0})
    settings = isolated_settings(services, tmp_path, models={model: entry})
    res = await Resources.open(settings)  # an ingest worker, as a deployment runs beside the API
    async with build_ingest_worker(res), ApiServer(settings) as api:
        tenant = f"metrics-{uuid.uuid4().hex[:8]}"
        headers = await api.headers_for(tenant)
        doc = await api.client.post(
            "/v1/documents",
            json={
                "text": "The Zorblat lighthouse keeper paints the lamp room teal every spring.",
                "source": "zorblat.txt",
            },
            headers=headers,
        )
        assert doc.status_code == 201, doc.text
        conv = await api.conversation(headers)
        question = f"What colour is the Zorblat lamp room? ({uuid.uuid4().hex[:6]})"

        before = await scrape(api)
        results = []
        for _ in range(2):  # the same question twice: the second search is a cached result
            resp = await api.client.post(
                f"/v1/conversations/{conv}/messages",
                json={"content": question, "stream": False, "max_tokens": 8},
                headers=headers,
            )
            assert resp.status_code == 200, resp.text
            results.append(resp.json())
        after = await scrape(api)
        queue = api.app.state.resources.policy.queue("chat")
        # The Temporal SDK's own metrics (drained into ours every second): workflows' end-to-end latency
        # on the queue, and the steps' latencies by type (all local activities now, inference
        # included). Each is drained on its own schedule, so wait for all of them.
        sdk = [
            ("temporal_workflow_endtoend_latency_seconds_count", {"task_queue": queue}),
            ("temporal_local_activity_execution_latency_seconds_count", {"activity_type": "infer"}),
            ("temporal_local_activity_execution_latency_seconds_count", {"activity_type": "prepare_turn"}),
        ]
        # The SDK's metrics reach ours when the buffer is next drained; on two busy cores that took
        # over 15 s once (CI), so the wait is generous. The assertion below is unchanged.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            sdk_after = await scrape(api)
            if all(total(sdk_after, name, **labels) > 0 for name, labels in sdk):
                break
            await asyncio.sleep(0.5)
        # Drift signals' raw material: each turn's retrieval, recorded off the turn's path.
        observed: list[tuple[object, ...]] = []
        for _ in range(50):
            observed = db_rows(
                services,
                "SELECT o.results, o.top_score, vector_dims(o.query_embedding) FROM retrieval_observations o"
                " JOIN tenants t ON t.id = o.tenant_id WHERE t.name = %s ORDER BY o.id",
                tenant,
            )
            if len(observed) == 2:
                break
            await asyncio.sleep(0.2)
    await res.close()

    assert all(r["status"] == "completed" and r["model"] == model for r in results)
    # The first search embedded the question; the second was the cached result (no embedding needed).
    assert [(n, dims) for n, _, dims in observed] == [(1, 384), (1, None)], observed
    assert all(isinstance(score, float) for _, score, _ in observed)
    by_model = {"gen_ai_request_model": model}
    out_tokens = sum(r["output_tokens"] for r in results)
    in_tokens = sum(r["input_tokens"] for r in results)
    assert delta(before, after, "turnflow_turns_total", tenant=tenant, model=model, status="completed") == 2
    cost = sum(Decimal(r["cost_usd"]) for r in results)
    assert cost > 0
    assert delta(before, after, "turnflow_cost_usd_total", tenant=tenant, model=model) == pytest.approx(
        float(cost), rel=1e-9
    )
    output, inputs = {"gen_ai_token_type": "output", **by_model}, {"gen_ai_token_type": "input", **by_model}
    assert delta(before, after, "gen_ai_client_token_usage_sum", **output) == out_tokens
    assert delta(before, after, "gen_ai_client_token_usage_count", **output) == 2
    assert delta(before, after, "gen_ai_client_token_usage_sum", **inputs) == in_tokens
    assert delta(before, after, "gen_ai_client_operation_duration_seconds_count", **by_model) == 2
    ttft_s = sum(r["ttft_ms"] for r in results) / 1000
    assert delta(before, after, "gen_ai_server_time_to_first_token_seconds_count", **by_model) == 2
    assert delta(before, after, "gen_ai_server_time_to_first_token_seconds_sum", **by_model) == pytest.approx(
        ttft_s, abs=0.05
    )
    decoding = sum(1 for r in results if r["output_tokens"] > 1)
    assert delta(before, after, "gen_ai_server_time_per_output_token_seconds_count", **by_model) == decoding
    assert delta(before, after, "turnflow_inference_output_tokens_per_second_count", **by_model) == decoding
    assert delta(before, after, "turnflow_turn_duration_seconds_count", model=model, status="completed") == 2
    # First turn: the query is embedded and searched (two misses); second: the cached result.
    for cache, result, n in (("result", "miss", 1), ("result", "hit", 1), ("embedding", "miss", 1)):
        assert (
            delta(before, after, "turnflow_retrieval_cache_requests_total", cache=cache, result=result) == n
        )
    assert delta(before, after, "turnflow_retrieval_duration_seconds_count") == 2
    assert total(after, "turnflow_model_breaker_state", model=model) == 0  # closed
    missing = [(name, labels) for name, labels in sdk if not total(sdk_after, name, **labels) > 0]
    assert not missing, (missing, sorted({n for n, _ in sdk_after if n.startswith("temporal_")}))


async def test_rate_limit_refusals_are_counted(services: Services, tmp_path: Path) -> None:
    async with ApiServer(isolated_settings(services, tmp_path)) as api:
        name = f"limited-{uuid.uuid4().hex[:8]}"
        headers = await api.headers_for(name)
        with psycopg.connect(psycopg_url(services.endpoints.database_url)) as conn:
            conn.execute(
                "UPDATE tenants SET settings = '{\"requests_per_min\": 2}'::jsonb WHERE name = %s", (name,)
            )
        before = await scrape(api)
        codes = [(await api.client.get("/v1/models", headers=headers)).status_code for _ in range(3)]
        after = await scrape(api)
    assert codes == [200, 200, 429]
    assert delta(before, after, "turnflow_rate_limit_refusals_total", limit="requests") == 1


async def test_metrics_off_when_telemetry_is_off(services: Services, tmp_path: Path) -> None:
    settings = isolated_settings(services, tmp_path, telemetry=False)
    async with ApiServer(settings) as api:
        resp = await api.client.get("/metrics")
    assert resp.status_code == 404 and "telemetry is off" in resp.json()["error"]["message"]


async def test_metrics_behind_a_scrape_credential(services: Services, tmp_path: Path) -> None:
    settings = isolated_settings(services, tmp_path, metrics_token="scrape-secret")
    async with ApiServer(settings) as api:
        for headers in ({}, {"Authorization": "Bearer wrong"}, dict(api.client.headers)):
            refused = await api.client.get("/metrics", headers=headers)
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        scraped = await api.client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert scraped.status_code == 200 and "turnflow_" in scraped.text


async def test_metrics_on_a_port_of_their_own(services: Services, tmp_path: Path) -> None:
    port = free_port()
    settings = isolated_settings(services, tmp_path, api_metrics_port=port)
    async with ApiServer(settings) as api, httpx.AsyncClient() as scraper:
        public = await api.client.get("/metrics")
        # A forged Host header does not make the public port the metrics one.
        forged = await api.client.get("/metrics", headers={"Host": f"127.0.0.1:{port}"})
        own = await scraper.get(f"http://127.0.0.1:{port}/metrics")
        other_routes = await scraper.get(f"http://127.0.0.1:{port}/v1/conversations")
    assert public.status_code == 404 and forged.status_code == 404
    assert own.status_code == 200 and "turnflow_" in own.text
    assert other_routes.status_code == 404  # that port serves metrics, nothing else


async def test_tenants_can_be_opaque_ids_in_metrics(services: Services, tmp_path: Path) -> None:
    model = f"opaque-{uuid.uuid4().hex[:6]}"
    settings = isolated_settings(
        services, tmp_path, models={model: real_model_entry()}, metrics_tenant_label="id"
    )
    tenant = f"customer-{uuid.uuid4().hex[:8]}"
    async with ApiServer(settings) as api:
        headers = await api.headers_for(tenant)
        conv = await api.conversation(headers)
        resp = await api.client.post(
            f"/v1/conversations/{conv}/messages",
            json={"content": "Hi!", "stream": False, "max_tokens": 4, "model": model},
            headers=headers,
        )
        assert resp.status_code == 200, resp.text
        [(tenant_id,)] = db_rows(services, "SELECT id FROM tenants WHERE name = %s", tenant)
        text = ""
        for _ in range(50):  # the worker's counters reach the scrape on their next export
            text = (await api.client.get("/metrics")).text
            if str(tenant_id) in text:
                break
            await asyncio.sleep(0.2)
    assert f'tenant="{tenant_id}"' in text and tenant not in text
