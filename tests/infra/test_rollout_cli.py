"""`turnflow models rollout`, `promote` and `rollback` against the test services' real Temporal
server, with the ingest worker that runs rollouts: start, refuse a second start, status, search
attributes, pause, abort; the operators' dashboard summary showing the rollout and users' feedback
per model version; a prompt template canary's share; a rollout whose worker does not answer."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from activities.adapters.canary_shares import SHARES_KEY
from activities.contracts.rollout import RolloutResult
from activities.logic.routing import share_field
from infra.config.endpoints import default_gguf
from infra.runtime.rollouts import rollout_id, rollout_input, rollout_state, start_rollout
from tests.support.api_harness import ApiServer, isolated_settings, model_entry, real_model_entry, run_cli
from tests.support.fake_model import ScriptedModelServer
from tests.support.services import Services, db_rows
from tests.support.sse import collect
from workers.ingest import build_ingest_worker
from workflows.search_attributes import CANARY, ROLLOUT_SHARE, ROLLOUT_STATE

pytestmark = pytest.mark.timeout(300)


@pytest_asyncio.fixture
async def stack(services: Services, tmp_path: Path) -> AsyncIterator[tuple[ApiServer, str, str]]:
    tag = uuid.uuid4().hex[:6]
    base, canary = f"base-{tag}", f"canary-{tag}"
    async with ScriptedModelServer(canary) as scripted:
        models = {base: real_model_entry(), canary: model_entry(scripted.url, version="c1", canary_of=base)}
        settings = isolated_settings(services, tmp_path, models=models, model_path=default_gguf())
        async with ApiServer(settings) as api, build_ingest_worker(api.app.state.resources):
            yield api, base, canary


async def poll(check: Any, timeout: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (found := await check()):
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.2)
    return found


async def test_rollout_from_the_cli_with_status_signals_and_the_dashboard(
    stack: tuple[ApiServer, str, str],
) -> None:
    api, base, canary = stack
    res = api.app.state.resources
    for bad, said in (
        (["--steps", "0.5,0.2"], "steps must rise"),
        (["--hold", "soon"], "hold:"),
        (["--min-turns", "0"], "min_turns:"),
    ):
        code, out = await run_cli(api, "models", "rollout", canary, *bad)
        assert code == 1 and said in out, (bad, out)
    code, out = await run_cli(
        api, "models", "rollout", canary, "--steps", "0.2,1", "--hold", "2h", "--min-turns", "7"
    )
    assert code == 0, out
    assert f"started rollout-{canary}" in out and f"against {base}" in out and "20% → 100%" in out
    assert "held 2:00:00 and 7 canary turns" in out
    handle = res.temporal.get_workflow_handle(rollout_id(canary), result_type=RolloutResult)

    async def at_first_step() -> bool:
        return (await handle.query("state"))["share"] == 0.2

    await poll(at_first_step)
    assert float(await res.redis.hget(SHARES_KEY, canary)) == 0.2
    attrs = (await handle.describe()).typed_search_attributes
    assert attrs.get(CANARY) == canary and attrs.get(ROLLOUT_STATE) == "running"
    assert attrs.get(ROLLOUT_SHARE) == "20%"

    again, out = await run_cli(api, "models", "rollout", canary)
    assert again == 1 and "already running" in out
    code, out = await run_cli(api, "models", "rollout", "no-such-model")
    assert code == 1 and "is not a canary" in out
    code, out = await run_cli(api, "models", "rollout", "status")
    assert code == 0 and canary in out and "running" in out

    # A reply with a thumbs-up: the dashboard counts it for the model version that gave it.
    conv = await api.conversation()
    async with api.client.stream(
        "POST", f"/v1/conversations/{conv}/messages", json={"content": "Say hi.", "max_tokens": 4}
    ) as resp:
        done = next(e for e in await collect(resp) if e.event == "done")
    rated = await api.client.post(f"/v1/messages/{done.data['message_id']}/feedback", json={"score": 1})
    assert rated.status_code == 200, rated.text
    operator = await api.headers_for("default", ("operator",))
    summary = (await api.client.get("/v1/dashboard/summary", headers=operator)).json()
    served = next(m for m in summary["models"] if m["model"] == done.data["model"])
    assert served["feedback"]["up"] >= 1 and served["feedback"]["mean_score"] is not None
    shown = next(r for r in summary["rollouts"] if r["name"] == canary)
    assert (shown["status"], shown["step"], shown["steps"], shown["share"]) == ("running", 1, 2, 0.2)
    assert summary["rollouts_error"] is None

    code, out = await run_cli(api, "models", "rollout", "pause", canary)
    assert code == 0 and "pause sent" in out

    async def paused() -> bool:
        return (await handle.describe()).typed_search_attributes.get(ROLLOUT_STATE) == "paused"

    await poll(paused)
    code, out = await run_cli(api, "models", "rollout", "abort", canary)
    assert code == 0 and "abort sent" in out
    result = await handle.result()
    assert result.status == "aborted" and result.share == 0.0 and "aborted by cli:" in result.reason
    assert float(await res.redis.hget(SHARES_KEY, canary)) == 0.0
    code, out = await run_cli(api, "models", "rollout", "status", canary, "--json")
    assert code == 0, out
    (ended,) = json.loads(out[out.index("[") :])
    assert (ended["status"], ended["share"], ended["step"]) == ("aborted", 0.0, 1)


async def test_promote_and_rollback_move_a_prompt_template_canary(services: Services, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    base, canary = f"tpl-{tag}", f"tpl-next-{tag}"
    prompts = {
        base: {"system": "You are the base template."},
        canary: {"canary_of": base, "share": 0.0, "system": "You are the canary template."},
    }
    async with ApiServer(isolated_settings(services, tmp_path, prompts=prompts)) as api:
        res = api.app.state.resources
        code, out = await run_cli(api, "models", "promote", canary, "--share", "0.3")
        assert code == 0 and f"0% → 30% of {base}'s conversations" in out, out
        assert float(await res.redis.hget(SHARES_KEY, share_field("prompt", canary))) == 0.3
        code, out = await run_cli(api, "models", "rollback", canary)
        assert code == 0 and "30% → 0%" in out, out
        code, out = await run_cli(api, "models", "promote", base)
        assert code == 1 and "is not a canary" in out
        code, out = await run_cli(api, "models", "promote", f"nothing-{tag}")
        assert code == 1 and "no model or prompt template named" in out
    rows = db_rows(
        services, "SELECT action FROM audit_events WHERE object_id = %s ORDER BY id", f"{canary}@{canary}"
    )
    assert [a for (a,) in rows] == ["prompts.promote", "prompts.rollback"]


async def test_a_rollout_no_worker_answers_for_still_shows_its_state(
    services: Services, tmp_path: Path
) -> None:
    # No ingest worker polls this API's queues: the state query goes unanswered, and the status
    # falls back to the search attributes within the query's timeout rather than hanging the page.
    tag = uuid.uuid4().hex[:6]
    base, canary = f"tpl-{tag}", f"tpl-next-{tag}"
    prompts = {base: {"system": "Base."}, canary: {"canary_of": base, "share": 0.0, "system": "Canary."}}
    async with ApiServer(isolated_settings(services, tmp_path, prompts=prompts)) as api:
        res = api.app.state.resources
        handle = await start_rollout(res.temporal, res.policy, rollout_input(res.policy, canary, "test"))
        try:
            state = await rollout_state(res.temporal, canary)
            assert (state["status"], state["share"]) == ("running", 0.0), state
            assert "no worker answered its state query" in state["reason"]
            code, out = await run_cli(api, "models", "rollout", "status", canary)
            assert code == 0 and "no worker answered" in out, out
        finally:
            await handle.terminate("test over")
