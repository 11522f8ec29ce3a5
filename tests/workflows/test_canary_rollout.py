"""CanaryRolloutWorkflow against real turns: the API (with its chat worker) serves turns from the real
llama.cpp server as the base and a ScriptedModelServer as the canary (it fails the questions a test
marks, or none); the rollout runs on the time-skipping test server, so a step held for an hour takes
no time, while its activities judge the real replies in Postgres and set the share in Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.adapters.canary_shares import SHARES_KEY
from activities.contracts.rollout import RolloutResult
from activities.ingest.rollout import RolloutActivities
from activities.logic.routing import CANARY_BUCKETS, canary_bucket, share_field
from infra.config.endpoints import default_gguf
from infra.runtime.rollouts import rollout_id, rollout_input
from tests.support.api_harness import ApiServer, isolated_settings, model_entry, real_model_entry
from tests.support.fake_model import ScriptedModelServer
from tests.support.services import Services, db_rows
from tests.support.sse import collect
from workers.chat import sandbox_runner
from workflows.canary_rollout import CanaryRolloutWorkflow

pytestmark = pytest.mark.timeout(300)
FAIL = "(fail)"


class Rig:
    """The API with a base and a canary model, and a rollout worker on the time-skipping server."""

    def __init__(
        self, services: Services, api: ApiServer, env: WorkflowEnvironment, names: tuple[str, str], queue: str
    ) -> None:
        self.services, self.api, self.env, self.queue = services, api, env, queue
        self.base, self.canary = names
        policy = api.app.state.resources.policy
        # Model canaries and prompt canaries draw their conversations from buckets of their own.
        self.buckets = share_field("prompt", self.base) if self.base in policy.prompts else self.base
        self.activities = RolloutActivities(
            api.app.state.resources.sessions, api.app.state.resources.redis, api.app.state.resources.policy
        )

    def worker(self, **options: Any) -> Worker:
        return Worker(
            self.env.client,
            task_queue=self.queue,
            workflows=[CanaryRolloutWorkflow],
            activities=[self.activities.rollout_set_share, self.activities.rollout_judge],
            workflow_runner=sandbox_runner(),
            **options,
        )

    async def start(self, **changes: Any) -> WorkflowHandle[Any, RolloutResult]:
        # A first turn before the rollout (so not judged): the API's first turn loads what later ones
        # reuse, and its first-token time would be the p95 of a small arm.
        await self.turn(await self.api.conversation())
        inp = rollout_input(self.api.app.state.resources.policy, self.canary, "test", {"steps": [0.5, 1.0]})
        inp = inp.model_copy(
            update={
                "hold": timedelta(hours=1),
                "check_every": timedelta(minutes=10),
                "min_turns": 3,
                **changes,
            }
        )
        return await self.env.client.start_workflow(
            "canary_rollout",
            inp,
            id=rollout_id(self.canary),
            task_queue=self.queue,
            result_type=RolloutResult,
        )

    async def share(self) -> float | None:
        kind = "prompt" if self.buckets != self.base else "model"
        raw = await self.api.app.state.resources.redis.hget(SHARES_KEY, share_field(kind, self.canary))
        return float(raw) if raw is not None else None

    async def conversations(self, in_canary: int, in_base: int, share: float = 0.5) -> list[str]:
        """Conversations whose sticky bucket puts them in each arm at ``share``, canary ones first."""
        canary: list[str] = []
        base: list[str] = []
        while len(canary) < in_canary or len(base) < in_base:
            conv = await self.api.conversation()
            arm = canary if canary_bucket(conv, self.buckets) < share * CANARY_BUCKETS else base
            if len(arm) < (in_canary if arm is canary else in_base):
                arm.append(conv)
        return canary + base

    async def turn(self, conv: str, text: str = "Say hi.") -> dict[str, Any]:
        async with self.api.client.stream(
            "POST", f"/v1/conversations/{conv}/messages", json={"content": text, "max_tokens": 4}
        ) as resp:
            assert resp.status_code == 200, await resp.aread()
            events = await collect(resp)
        end = next(e for e in events if e.event in ("done", "error"))
        assert end.event == "done", events  # every turn is answered, by the canary or its base
        return dict(end.data)

    def served_by(self, message_id: str) -> str:
        return str(self.reply(message_id)["route"]["served_by"])

    def reply(self, message_id: str) -> dict[str, Any]:
        ((route, template),) = db_rows(
            self.services, "SELECT route, prompt_template_version FROM messages WHERE id = %s", message_id
        )
        return {"route": route, "template": template}


async def at_first_step(handle: WorkflowHandle[Any, RolloutResult]) -> dict[str, Any]:
    """The rollout's state once it has set its first share."""
    while (state := await handle.query("state"))["share"] != 0.5:
        await asyncio.sleep(0.05)
    return dict(state)


@pytest_asyncio.fixture
async def rig(
    services: Services, tmp_path: Path, time_skipping: WorkflowEnvironment, task_queue: str
) -> AsyncIterator[tuple[Rig, ScriptedModelServer]]:
    tag = uuid.uuid4().hex[:6]
    base, canary = f"base-{tag}", f"canary-{tag}"
    async with ScriptedModelServer(canary) as scripted:
        models = {
            base: real_model_entry(),
            canary: model_entry(scripted.url, version="c1", canary_of=base, share=0.0),
        }
        # The stand-in has no tokenize route: prompts are counted with the embedded model's GGUF.
        settings = isolated_settings(services, tmp_path, models=models, model_path=default_gguf())
        async with ApiServer(settings) as api:
            yield Rig(services, api, time_skipping, (base, canary), task_queue), scripted


@pytest_asyncio.fixture
async def prompt_rig(
    services: Services, tmp_path: Path, time_skipping: WorkflowEnvironment, task_queue: str
) -> AsyncIterator[tuple[Rig, ScriptedModelServer]]:
    """One model (a stand-in that records each request), and a base prompt template with a canary."""
    tag = uuid.uuid4().hex[:6]
    base, canary = f"tmpl-{tag}-v1", f"tmpl-{tag}-v2"
    prompts = {
        base: {"system": "You are the base template."},
        canary: {"system": "You are the canary template.", "canary_of": base, "share": 0.0},
    }
    async with ScriptedModelServer(f"model-{tag}") as scripted:
        models = {f"model-{tag}": model_entry(scripted.url)}
        settings = isolated_settings(
            services, tmp_path, models=models, prompts=prompts, model_path=default_gguf()
        )
        async with ApiServer(settings) as api:
            yield Rig(services, api, time_skipping, (base, canary), task_queue), scripted


def audit_actions(services: Services, canary: str) -> list[tuple[str, dict[str, Any]]]:
    rows = db_rows(
        services,
        "SELECT action, details FROM audit_events WHERE object_id LIKE %s ORDER BY id",
        f"{canary}@%",
    )
    return [(a, d) for a, d in rows]


async def test_a_canary_failing_half_its_questions_is_rolled_back_at_its_first_gate(
    rig: tuple[Rig, ScriptedModelServer],
) -> None:
    r, scripted = rig
    scripted.script.fails = lambda body: FAIL in str(body["messages"][-1]["content"])
    async with r.worker():
        handle = await r.start()
        await at_first_step(handle)
        assert await r.share() == 0.5
        convs = await r.conversations(in_canary=4, in_base=4)
        # The failing questions last: after the first, the canary's circuit opens, and the next ones of
        # its conversations go straight to the base (still counted against the canary).
        ends = [await r.turn(c, f"Say hi. {FAIL}" if i in (2, 3) else "Say hi.") for i, c in enumerate(convs)]
        result = await handle.result()

    assert result.status == "rolled_back" and result.share == 0.0
    gate = result.failed_gate
    assert gate is not None and gate.gate == "error_rate_increase"
    # Two of the canary's four turns failed over to the base; none of the base's failed.
    assert (gate.canary, gate.base, gate.value) == (0.5, 0.0, 0.5) and gate.limit == 0.05
    assert "error_rate_increase" in result.reason
    assert await r.share() == 0.0
    # The failing questions were answered by the base model all the same; the rest by their arm.
    assert [r.served_by(e["message_id"]) for e in ends] == [r.canary] * 2 + [r.base] * 6
    actions = audit_actions(r.services, r.canary)
    assert [a for a, _ in actions] == ["models.rollout.step", "models.rollout.rolled_back"]
    details = actions[1][1]
    assert details["share_before"] == 0.5 and details["share_after"] == 0.0
    assert details["gate"]["gate"] == "error_rate_increase" and details["judgement"]["canary_turns"] == 4
    # Rolled back, the canary's conversations go to the base again.
    assert r.served_by((await r.turn(convs[0]))["message_id"]) == r.base


async def test_a_good_canary_climbs_to_every_conversation(rig: tuple[Rig, ScriptedModelServer]) -> None:
    r, _ = rig
    async with r.worker():
        handle = await r.start()
        await at_first_step(handle)
        convs = await r.conversations(in_canary=3, in_base=3)
        served = [r.served_by((await r.turn(c))["message_id"]) for c in convs]
        result = await handle.result()  # the hour-long hold is skipped
    assert result.status == "promoted" and result.share == 1.0 and result.failed_gate is None, result.reason
    held = result.steps[0].judgement
    assert held is not None and held.enough and (held.canary_turns, held.base_turns) == (3, 3)
    assert all(g.passed for g in held.gates)
    assert [s.share for s in result.steps] == [0.5, 1.0]
    assert await r.share() == 1.0
    assert [a for a, _ in audit_actions(r.services, r.canary)] == [
        "models.rollout.step",
        "models.rollout.promoted",
    ]
    assert served == [r.canary] * 3 + [r.base] * 3


async def test_a_paused_rollout_holds_its_step(rig: tuple[Rig, ScriptedModelServer]) -> None:
    r, _ = rig
    async with r.worker():
        handle = await r.start()
        await at_first_step(handle)
        for conv in await r.conversations(in_canary=3, in_base=1):
            await r.turn(conv)
        await handle.signal("pause")
        await r.env.sleep(timedelta(hours=6))  # six times the hold, skipped
        state = await handle.query("state")
        assert (state["status"], state["paused"], state["step"], state["share"]) == ("paused", True, 1, 0.5)
        assert state["latest"] is None  # nothing judged while paused
        assert await r.share() == 0.5
        await handle.signal("resume")
        result = await handle.result()
    assert result.status == "promoted", result.reason


async def test_a_worker_stopped_mid_rollout_does_not_lose_its_step(
    rig: tuple[Rig, ScriptedModelServer],
) -> None:
    r, _ = rig
    # Without a workflow cache (so no sticky queue the test server would wait on for the stopped
    # worker), each task is replayed from the history, as after a crash.
    async with r.worker(max_cached_workflows=0):
        handle = await r.start()
        state = await at_first_step(handle)
        for conv in await r.conversations(in_canary=3, in_base=1):
            await r.turn(conv)
    # No worker now; the rollout's state is in the server's history. Another worker takes it up.
    async with r.worker(max_cached_workflows=0):
        result = await handle.result()
    assert result.status == "promoted", result.reason
    # The first step's share was set once: the new worker replayed it rather than starting over.
    assert [a for a, _ in audit_actions(r.services, r.canary)] == [
        "models.rollout.step",
        "models.rollout.promoted",
    ]
    assert result.steps[0].started == datetime.fromisoformat(state["history"][0]["started"])


async def test_a_prompt_template_canary_rolls_out_the_same_way(
    prompt_rig: tuple[Rig, ScriptedModelServer],
) -> None:
    r, scripted = prompt_rig
    # A steady first token: both arms are this server, and TTFTs of a millisecond or two would make
    # the p95 ratio gate judge noise.
    scripted.script.first_token_delay_s = 0.05
    async with r.worker():
        handle = await r.start()
        await at_first_step(handle)
        assert await r.share() == 0.5
        convs = await r.conversations(in_canary=3, in_base=3)
        replies = [r.reply((await r.turn(c))["message_id"]) for c in convs]
        result = await handle.result()
    assert result.status == "promoted" and await r.share() == 1.0, result.reason
    held = result.steps[0].judgement
    assert held is not None and (held.canary_turns, held.base_turns) == (3, 3)
    # Each conversation's prompt was assembled with the template it was assigned, and recorded so.
    assert [x["template"] for x in replies] == [r.canary] * 3 + [r.base] * 3
    # And a client sees it in the transcript (how an app tells its users' arms apart).
    for conv, template in ((convs[0], r.canary), (convs[-1], r.base)):
        listed = (await r.api.client.get(f"/v1/conversations/{conv}/messages")).json()
        assert [m["prompt_template_version"] for m in listed] == [None, template]
    assert [x["route"]["prompt_arm"] for x in replies] == [{"base": r.base, "template": r.canary}] * 3 + [
        {"base": r.base, "template": r.base}
    ] * 3
    # Each system message's template text (retrieval may add passages below it: other tests leave
    # documents in the default tenant).
    systems = [str(body["messages"][0]["content"]).partition("\n")[0] for body in scripted.bodies]
    # (The first request is start()'s turn before the rollout, on the base template.)
    assert (
        systems
        == ["You are the base template."]
        + ["You are the canary template."] * 3
        + ["You are the base template."] * 3
    )
    actions = [a for a, _ in audit_actions(r.services, r.canary)]
    assert actions == ["prompts.rollout.step", "prompts.rollout.promoted"]
