"""Routing across real model servers: the test services' llama.cpp server and a second one started here
under another name, plus ScriptedModelServer where a test needs a server that fails, is slow, or must
prove it was never called (a stand-in for a managed API).

One module, over 400 lines, because every scenario shares the second model server it starts once."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sys
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from activities.contracts.route import RouteRequest
from activities.logic.routing import TenantPolicy, pick_replica, route
from infra.cli.models import set_share
from infra.config.endpoints import default_gguf
from infra.config.settings import REPO_ROOT, Settings
from infra.runtime.resources import Resources
from infra.stack.components.model import model_component
from infra.stack.supervisor import Supervisor
from tests.support.api_harness import (
    REAL_MODEL,
    ApiServer,
    cli_env,
    isolated_settings,
    model_entry,
    real_model_entry,
)
from tests.support.fake_model import ScriptedModelServer
from tests.support.in_loop_server import InLoopServer
from tests.support.services import Services, db_rows, free_port, psycopg_url
from tests.support.sse import Event, collect
from workers.chat import build_batch_worker

pytestmark = pytest.mark.timeout(240)
SECOND = "smollm2-second"


@pytest_asyncio.fixture(scope="module")
async def second_model(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A second real llama.cpp server process, serving under another name."""
    port = free_port()
    supervisor = Supervisor(tmp_path_factory.mktemp("second-model"))
    await supervisor.start([model_component(port, model_path=None, alias=SECOND, context=2048, threads=1)])
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await supervisor.stop()


@pytest_asyncio.fixture
async def scripted() -> AsyncIterator[ScriptedModelServer]:
    async with ScriptedModelServer("failing-or-slow-gpu") as server:
        yield server


def settings_with(services: Services, tmp_path: Path, models: dict[str, Any], **extra: Any) -> Settings:
    # Stand-in servers have no tokenize route: prompts are counted with the embedded model's GGUF.
    return isolated_settings(services, tmp_path, models=models, model_path=default_gguf(), **extra)


async def turn(api: ApiServer, conv: str, headers: dict[str, str] | None = None, **body: Any) -> list[Event]:
    payload = {"content": "Say hi.", "max_tokens": 4, **body}
    async with api.client.stream(
        "POST", f"/v1/conversations/{conv}/messages", json=payload, headers=headers
    ) as resp:
        assert resp.status_code == 200, await resp.aread()
        return await collect(resp)


def reply_row(services: Services, message_id: str) -> dict[str, Any]:
    with psycopg.connect(psycopg_url(services.endpoints.database_url)) as conn:
        cur = conn.execute(
            "SELECT model_id, model_version, route, cost_usd, input_tokens, output_tokens, finish_reason,"
            " interactive FROM messages WHERE id = %s",
            (message_id,),
        )
        names = [d.name for d in cur.description or []]
        row = cur.fetchone()
    assert row is not None
    return dict(zip(names, row, strict=True))


def end_of(events: list[Event]) -> Event:
    return next(e for e in reversed(events) if e.event in ("done", "error"))


async def test_latency_budget_picks_the_low_latency_model(
    services: Services, tmp_path: Path, second_model: str
) -> None:
    models = {
        "big": real_model_entry(tier="gpu", fidelity=10, typical_ttft_ms=900),
        "small": model_entry(
            second_model, tier="cpu-quantized", fidelity=1, typical_ttft_ms=60, version="s1"
        ),
    }
    async with ApiServer(settings_with(services, tmp_path, models)) as api:
        conv = await api.conversation()
        fast = await turn(api, conv, latency_budget_ms=100)
        best = await turn(api, conv)
    assert fast[0].data["model"] == "small" and fast[0].data["route"] == "latency_budget"
    assert best[0].data["model"] == "big" and best[0].data["route"] == "highest_fidelity"
    row = reply_row(services, end_of(fast).data["message_id"])
    assert row["model_id"] == "small" and row["model_version"] == "s1"
    assert row["route"]["rule"] == "latency_budget" and row["route"]["served_by"] == "small"
    assert row["route"]["endpoints"]["small"] == second_model


async def test_residency_holds_under_a_total_outage_of_allowed_models(
    services: Services, tmp_path: Path, scripted: ScriptedModelServer
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"  # the on-prem model's server is down
    models = {
        "onprem": model_entry(nobody, residency=["on-prem"], fidelity=5),
        # A managed API (stand-in): more capable, and never to be reached by an on-prem tenant.
        "managed": model_entry(
            scripted.url,
            provider="openai",
            tier="managed",
            residency=["us"],
            fidelity=50,
            served_name="gpt-managed",
            headers={"X-Privacy-Mode": "no-log"},
        ),
    }
    tenant = f"onprem-{uuid.uuid4().hex[:8]}"
    async with ApiServer(settings_with(services, tmp_path, models, breaker={"min_calls": 2})) as api:
        headers = await api.headers_for(tenant)
        with psycopg.connect(psycopg_url(services.endpoints.database_url)) as conn:
            conn.execute("UPDATE tenants SET residency_tags = '{on-prem}' WHERE name = %s", (tenant,))
        conv = await api.conversation(headers)
        failed = await turn(api, conv, headers)  # tries on-prem (its retries open the circuit), errors
        refused = await turn(api, conv, headers)  # the circuit is open: refused at routing, at once
        # Another tenant, without the constraint, is served by the managed model.
        other = await turn(api, await api.conversation())
    for events in (failed, refused):
        assert events[-1].event == "error", [e.event for e in events]
        assert events[-1].data["code"] == "model_unavailable" and events[-1].data["retryable"] is True
    assert "token" not in [e.event for e in failed + refused]
    assert scripted.requests == 1 and end_of(other).data["model"] == "managed"
    refusals = db_rows(
        services,
        "SELECT a.action, a.details->'residency' FROM audit_events a JOIN tenants t ON t.id = a.tenant_id"
        " WHERE t.name = %s AND a.actor = 'router'",
        tenant,
    )
    assert refusals == [("routing.refused.model_unavailable", ["on-prem"])]  # the refused second turn
    # The managed adapter's privacy knobs: no provider-side storage, the configured header, the model name.
    assert scripted.bodies[0]["store"] is False and scripted.bodies[0]["model"] == "gpt-managed"
    assert scripted.headers[0]["x-privacy-mode"] == "no-log"


async def test_breaker_opens_moves_traffic_within_one_request_and_closes_after_recovery(
    services: Services, tmp_path: Path, scripted: ScriptedModelServer
) -> None:
    models = {
        "gpu": model_entry(scripted.url, fidelity=10, fallback=[REAL_MODEL]),
        REAL_MODEL: real_model_entry(),
    }
    breaker = {"min_calls": 3, "failure_rate": 0.5, "consecutive_failures": 10, "cooldown": "2s"}
    scripted.script.status = 500
    async with ApiServer(settings_with(services, tmp_path, models, breaker=breaker)) as api:
        conv = await api.conversation()
        first = await turn(api, conv)  # 2 failed attempts (retry policy), then the fallback
        second = await turn(api, conv)  # the 3rd failure opens the circuit: fallback in this request
        assert scripted.requests == 3
        third = await turn(api, conv)  # routed around the open circuit: gpu is not even tried
        assert scripted.requests == 3
        for events in (first, second, third):
            assert end_of(events).event == "done" and end_of(events).data["model"] == REAL_MODEL
        assert [e.data["model"] for e in second if e.event in ("turn", "reset")] == ["gpu", REAL_MODEL]
        assert third[0].data["model"] == REAL_MODEL
        row = reply_row(services, end_of(third).data["message_id"])
        assert {"model": "gpu", "reason": "breaker open"} in row["route"]["skipped"]
        assert reply_row(services, end_of(second).data["message_id"])["route"]["fallbacks"] == [
            {"model": "gpu", "error": "CircuitOpen"}
        ]

        scripted.script.status = 200  # the GPU server recovers
        await asyncio.sleep(2.2)  # the cool-down
        probe = await turn(api, conv)  # half-open: this turn is the probe, and it succeeds
        after = await turn(api, conv)
    assert end_of(probe).data["model"] == "gpu" and end_of(after).data["model"] == "gpu"
    assert scripted.requests == 5


async def test_a_slow_endpoint_opens_its_breaker(
    services: Services, tmp_path: Path, scripted: ScriptedModelServer
) -> None:
    models = {
        "gpu": model_entry(scripted.url, fidelity=10, fallback=[REAL_MODEL]),
        REAL_MODEL: real_model_entry(),
    }
    scripted.script.first_token_delay_s = 0.6
    breaker = {"min_calls": 2, "failure_rate": 0.5, "slow_call": "300ms", "cooldown": "1m"}
    async with ApiServer(settings_with(services, tmp_path, models, breaker=breaker)) as api:
        conv = await api.conversation()
        slow = [await turn(api, conv) for _ in range(2)]  # answered, but slowly: the circuit opens
        moved = await turn(api, conv)
    assert [end_of(e).data["model"] for e in slow] == ["gpu", "gpu"]
    assert end_of(moved).data["model"] == REAL_MODEL and scripted.requests == 2


async def test_a_slow_last_resort_keeps_serving(
    services: Services, tmp_path: Path, scripted: ScriptedModelServer
) -> None:
    """Slow, but with no replica or fallback to move to: its circuit stays closed and turns are served
    (a busy CPU model's queue is not a reason to refuse every turn)."""
    models = {"gpu": model_entry(scripted.url, fidelity=10)}
    scripted.script.first_token_delay_s = 0.6
    breaker = {"min_calls": 2, "failure_rate": 0.5, "slow_call": "300ms", "cooldown": "1m"}
    async with ApiServer(settings_with(services, tmp_path, models, breaker=breaker)) as api:
        conv = await api.conversation()
        served = [await turn(api, conv) for _ in range(3)]
    assert [(end_of(e).event, end_of(e).data.get("model")) for e in served] == [("done", "gpu")] * 3
    assert scripted.requests == 3


async def test_canary_is_sticky_matches_the_router_and_follows_promote_and_rollback(
    services: Services, tmp_path: Path, second_model: str
) -> None:
    models = {
        REAL_MODEL: real_model_entry(),
        "next": model_entry(second_model, version="2", canary_of=REAL_MODEL, share=0.5, tier="cpu-quantized"),
    }
    settings = settings_with(services, tmp_path, models)
    async with ApiServer(settings) as api:
        res = await Resources.open(settings)
        try:
            await res.redis.hdel("turnflow:models:shares", "next")
            convs = [await api.conversation() for _ in range(16)]
            served = {c: end_of(await turn(api, c)).data["model"] for c in convs}
            again = {c: end_of(await turn(api, c)).data["model"] for c in convs[:6]}
            expected = {
                c: route(
                    res.registry.models,
                    RouteRequest(tenant_id="t", conversation_id=c),
                    TenantPolicy(),  # the default tenant's
                    lambda _: True,
                )
                .chain[0]
                .name
                for c in convs
            }
            assert set(served.values()) == {REAL_MODEL, "next"}  # 16 conversations at 50%: both serve
            assert served == expected and all(again[c] == served[c] for c in again)

            await set_share(res, "next", 1.0, "promote")  # no restart: the next turns see it
            promoted = {end_of(await turn(api, c)).data["model"] for c in convs[:4]}
            await set_share(res, "next", 0.0, "rollback")
            rolled_back = {end_of(await turn(api, c)).data["model"] for c in convs[:4]}
        finally:
            await res.redis.hdel("turnflow:models:shares", "next")
            await res.close()
    assert promoted == {"next"} and rolled_back == {REAL_MODEL}
    with psycopg.connect(psycopg_url(services.endpoints.database_url)) as conn:
        actions = conn.execute(
            "SELECT action, details->>'share_after' FROM audit_events WHERE object_id = 'next@2' ORDER BY id"
        ).fetchall()
    assert actions[-2:] == [("models.promote", "1.0"), ("models.rollback", "0.0")]


async def test_a_conversation_sticks_to_one_replica(
    services: Services, tmp_path: Path, second_model: str
) -> None:
    models = {REAL_MODEL: real_model_entry(endpoints=["{model_url}", second_model])}
    replicas = [services.endpoints.model_url, second_model]
    async with ApiServer(settings_with(services, tmp_path, models)) as api:
        # Two conversations for each replica, as rendezvous hashing of their ids places them: six
        # random ones all landed on one replica in 1 run of 32.
        expected: dict[str, str] = {}
        for _ in range(40):
            c = await api.conversation()
            if sum(r == pick_replica(c, replicas) for r in expected.values()) < 2:
                expected[c] = pick_replica(c, replicas)
            if len(expected) == 4:
                break
        assert set(expected.values()) == set(replicas)
        served: dict[str, list[str]] = {c: [] for c in expected}
        for c in expected:
            for _ in range(2):
                row = reply_row(services, end_of(await turn(api, c)).data["message_id"])
                served[c].append(row["route"]["endpoints"][REAL_MODEL])
    # Each conversation stays on its replica, and both replicas serve.
    assert served == {c: [url, url] for c, url in expected.items()}


async def test_cost_accounting_sums_match_the_per_message_records(
    services: Services, tmp_path: Path, second_model: str
) -> None:
    models = {
        "big": real_model_entry(fidelity=10, cost={"input_per_1k": "0.0031", "output_per_1k": "0.0127"}),
        "small": model_entry(
            second_model,
            fidelity=1,
            typical_ttft_ms=50,
            cost={"input_per_1k": "0.0003", "output_per_1k": "0.0011"},
        ),
    }
    tenant = f"cost-{uuid.uuid4().hex[:8]}"
    settings = settings_with(services, tmp_path, models)
    async with ApiServer(settings) as api:
        headers = await api.headers_for(tenant)
        conv = await api.conversation(headers)
        done = [
            end_of(await turn(api, conv, headers, latency_budget_ms=b)).data
            for b in (None, 100, None, 100, 100)
        ]
        usage = (await api.client.get("/v1/usage", params={"tenant": tenant}, headers=headers)).json()
        other = await api.client.get("/v1/usage", params={"tenant": "default"}, headers=headers)
    assert other.status_code == 404  # another tenant's usage does not exist for this one

    rows = db_rows(
        services,
        "SELECT m.model_id, m.input_tokens, m.output_tokens, m.cost_usd FROM messages m"
        " JOIN tenants t ON t.id = m.tenant_id WHERE t.name = %s AND m.role = 'assistant'",
        tenant,
    )
    assert len(rows) == 5 and [d["cost_usd"] for d in done] != [None] * 5
    prices = {"big": (Decimal("0.0031"), Decimal("0.0127")), "small": (Decimal("0.0003"), Decimal("0.0011"))}
    for model, tokens_in, tokens_out, cost in rows:
        p_in, p_out = prices[model]
        assert cost == (tokens_in * p_in + tokens_out * p_out) / 1000  # exact
    by_model = {m["model"]: m for m in usage["models"]}
    assert set(by_model) == {"big", "small"}
    for model in by_model:
        mine = [r for r in rows if r[0] == model]
        assert by_model[model]["messages"] == len(mine)
        assert by_model[model]["input_tokens"] == sum(r[1] for r in mine)
        assert by_model[model]["output_tokens"] == sum(r[2] for r in mine)
        assert Decimal(by_model[model]["cost_usd"]) == sum(r[3] for r in mine)
        assert Decimal(by_model[model]["cost_per_1k_messages_usd"]) == sum(r[3] for r in mine) * 1000 / len(
            mine
        )
    assert Decimal(usage["cost_usd"]) == sum(r[3] for r in rows)

    # The operator's view says the same.
    env = cli_env(settings)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "infra.cli.main",
        "usage",
        "--tenant",
        tenant,
        "--json",
        env=env,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()
    cli = {r["model"]: r for r in json.loads(stdout)["rows"]}
    assert {m: Decimal(r["cost_usd"]) for m, r in cli.items()} == {
        m: Decimal(u["cost_usd"]) for m, u in by_model.items()
    }


class WebhookReceiver(InLoopServer):
    """Accepts deliveries, after refusing the first ``refuse_first`` (503) on purpose."""

    def __init__(self, refuse_first: int = 0) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.refused = 0
        self.refuse_first = refuse_first
        super().__init__(Starlette(routes=[Route("/hook", self._hook, methods=["POST"])]))

    async def _hook(self, request: Request) -> Response:
        if self.refused < self.refuse_first:
            self.refused += 1
            return Response(status_code=503)
        self.calls.append((dict(request.headers), await request.body()))
        return Response(status_code=204)


async def test_non_interactive_turns_queue_apart_and_never_delay_interactive_ones(
    services: Services, tmp_path: Path
) -> None:
    # The receiver is a local plain-http server: allowed as a developer's temporal.yaml would allow it.
    local = {"allow_http_hosts": ["127.0.0.1"], "allow_private": ["127.0.0.1"]}
    settings = isolated_settings(services, tmp_path, webhooks=local, webhook_secret="s3cret")
    # The receiver refuses twice (retried 1 s, then 2 s later): the turn must not wait for it.
    async with WebhookReceiver(refuse_first=2) as hook, ApiServer(settings) as api:
        conv = await api.conversation()
        resp = await api.client.post(
            f"/v1/conversations/{conv}/messages",
            json={
                "content": "Summarise: batch job.",
                "interactive": False,
                "max_tokens": 4,
                "webhook_url": f"{hook.url}/hook",
            },
        )
        assert resp.status_code == 202, resp.text
        batch_id = resp.json()["turn_id"]
        assert resp.headers["Location"] == f"/v1/turns/{batch_id}"
        # No batch worker is running: the batch turn waits, and an interactive turn is not held up by it.
        interactive = await turn(api, await api.conversation())
        assert end_of(interactive).event == "done"
        state = (await api.client.get(f"/v1/turns/{batch_id}")).json()
        assert state["status"] == "queued" and state["result"] is None

        res = await Resources.open(settings)
        try:
            async with build_batch_worker(res):
                delivered_when_completed = None
                for _ in range(150):
                    state = (await api.client.get(f"/v1/turns/{batch_id}")).json()
                    if state["status"] not in ("queued", "running") and delivered_when_completed is None:
                        delivered_when_completed = len(hook.calls)
                    if delivered_when_completed is not None and hook.calls:
                        break
                    await asyncio.sleep(0.2)
        finally:
            await res.close()
    assert state["status"] == "completed" and state["result"]["text"]
    # Completed while the receiver was still refusing; delivered afterwards, by the webhook's own workflow.
    assert delivered_when_completed == 0 and hook.refused == 2 and len(hook.calls) == 1
    assert state["result"]["model"] == REAL_MODEL and state["result"]["cost_usd"] is not None
    headers, body = hook.calls[0]
    assert json.loads(body)["turn_id"] == batch_id
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["x-turnflow-signature"] == expected
    assert reply_row(services, state["result"]["message_id"])["interactive"] is False


async def test_a_tenant_over_its_daily_token_budget_is_refused(services: Services, tmp_path: Path) -> None:
    tenant = f"budget-{uuid.uuid4().hex[:8]}"
    settings = isolated_settings(services, tmp_path)
    async with ApiServer(settings) as api:
        headers = await api.headers_for(tenant)
        with psycopg.connect(psycopg_url(services.endpoints.database_url)) as conn:
            conn.execute(
                """UPDATE tenants SET settings = '{"daily_token_budget": 20}' WHERE name = %s""", (tenant,)
            )
        conv = await api.conversation(headers)
        first = await turn(api, conv, headers)  # under budget when it starts: served (and over it after)
        refused = await api.client.post(
            f"/v1/conversations/{conv}/messages", json={"content": "Again?", "stream": False}, headers=headers
        )
    assert end_of(first).event == "done"
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "token_budget_exceeded" and error["retryable"] is False
    assert "of its 20 tokens today" in error["message"]
