"""Worker Versioning on the real dev server: a chat turn is pinned to the build it started on, so it
finishes there after a new build becomes current, while new turns go to the new build; ingest workflows
auto-upgrade; `turnflow deploy` shows the builds and rolls back, audited."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHandle

from activities.contracts.maintenance import PurgeInput
from infra.config.endpoints import default_gguf
from infra.config.settings import Settings
from infra.runtime.deployments import (
    DeploymentStatus,
    EagerGate,
    deployment_of,
    describe,
    promote_own_build,
    wait_until_polled,
)
from infra.runtime.resources import Resources
from tests.support.api_harness import ApiServer, isolated_settings, model_entry, run_cli
from tests.support.fake_model import ScriptedModelServer
from tests.support.services import Services, db_rows
from workers.chat import build_chat_worker
from workers.ingest import build_ingest_worker
from workflows.purge import PurgeTombstonesWorkflow

pytestmark = pytest.mark.timeout(180)


def two_builds(services: Services, tmp_path: Path, model_url: str) -> tuple[Settings, Settings]:
    """Build A and build B of deployments of their own, on the same task queues."""
    name = f"tv-{uuid.uuid4().hex[:8]}"
    a = isolated_settings(
        services,
        tmp_path,
        models={"scripted-gpu": model_entry(model_url, fidelity=10)},
        model_path=default_gguf(),  # the scripted server has no tokenizer endpoint
        worker_versioning=True,
        deployment_name=name,
        build_id=f"{name}-a",
    )
    return a, a.model_copy(update={"build_id": f"{name}-b"})


async def build_of(handle: WorkflowHandle[object, object]) -> str:
    info = (await handle.describe()).raw_description.workflow_execution_info.versioning_info
    return info.deployment_version.build_id


async def test_a_pinned_turn_finishes_on_its_build_while_new_turns_go_to_the_new_one(
    services: Services, tmp_path: Path
) -> None:
    async with ScriptedModelServer("scripted-gpu") as scripted:
        scripted.script.reply = [f" w{i}" for i in range(24)]
        # A turn of ~12 s: long enough to ship a build under it, and longer than the workflow task's
        # heartbeat (8 s), which is when a turn that is one local-activity task shows on its build.
        scripted.script.token_delay_s = 0.5
        settings_a, settings_b = two_builds(services, tmp_path, scripted.url)
        async with ApiServer(settings_a) as api:  # its eager chat worker is build A
            res_a: Resources = api.app.state.resources
            queue = res_a.policy.queue("chat")
            await promote_own_build(res_a.temporal, settings_a, {"chat": queue})
            conv = await api.conversation()
            slow = asyncio.create_task(
                api.client.post(
                    f"/v1/conversations/{conv}/messages", json={"content": "Count.", "stream": False}
                )
            )
            while scripted.requests == 0:  # the turn is generating on A
                await asyncio.sleep(0.05)
            res_b = await Resources.open(settings_b)
            try:
                async with build_chat_worker(res_b):
                    await promote_own_build(res_b.temporal, settings_b, {"chat": queue})
                    chat = deployment_of(settings_a, "chat")
                    status = await describe(res_a.temporal, chat)
                    assert status and status.current == settings_b.build_id
                    # The turn A started is still open on A, and shown so (once its task heartbeats).
                    for _ in range(40):
                        [on_a] = [b for b in status.builds if b.build_id == settings_a.build_id]
                        if on_a.open_runs:
                            break
                        await asyncio.sleep(0.25)
                        status = await describe(res_a.temporal, chat)
                        assert status
                    assert on_a.open_runs == 1 and on_a.pollers >= 1

                    first = (await slow).json()
                    assert first["status"] == "completed" and first["text"].strip().startswith("w0")
                    assert (
                        await build_of(res_a.temporal.get_workflow_handle(first["turn_id"]))
                        == settings_a.build_id
                    )

                    scripted.script.token_delay_s = 0
                    # The API's own worker is A: it stops starting turns eagerly (they would run on A).
                    gate = res_a.eager_gate
                    assert gate is not None
                    await gate.refresh()
                    assert not gate.allowed
                    second = await api.client.post(
                        f"/v1/conversations/{conv}/messages", json={"content": "Again.", "stream": False}
                    )
                    assert second.status_code == 200, second.text
                    turn = second.json()["turn_id"]
                    assert await build_of(res_a.temporal.get_workflow_handle(turn)) == settings_b.build_id

                    code, out = await run_cli(api, "deploy", "status", "--kind", "chat")
                    assert code == 0, out
                    assert f"current {settings_b.build_id}" in out and settings_a.build_id in out, out

                    code, out = await run_cli(api, "deploy", "rollback", "--kind", "chat")
                    assert code == 0 and f"{settings_a.build_id} is current" in out, out
                    back = await describe(res_a.temporal, chat, details=False)
                    assert back and back.current == settings_a.build_id
                    await gate.refresh()
                    assert gate.allowed  # A is current again: eager starts again
                    [(details,)] = db_rows(
                        services,
                        "SELECT details FROM audit_events WHERE action = %s AND object_id = %s",
                        "deploy.rollback",
                        chat,
                    )
                    assert details["build"] == settings_a.build_id
                    assert details["current_before"] == settings_b.build_id
            finally:
                await res_b.close()


async def test_ingest_workflows_auto_upgrade_to_the_current_build(services: Services, tmp_path: Path) -> None:
    settings_a, settings_b = two_builds(services, tmp_path, services.endpoints.model_url)
    res_a, res_b = await Resources.open(settings_a), await Resources.open(settings_b)
    queue = res_a.policy.queue("ingest")
    client: Client = res_a.temporal
    try:
        async with build_ingest_worker(res_a):
            await promote_own_build(client, settings_a, {"ingest": queue})
            purge = PurgeInput(options=res_a.policy.options_for("purge_tombstones"), dry_run=True)
            first = await client.start_workflow(
                PurgeTombstonesWorkflow.run, purge, id=f"purge-{uuid.uuid4()}", task_queue=queue
            )
            await first.result()
            assert await build_of(first) == settings_a.build_id
            async with build_ingest_worker(res_b):
                ingest = deployment_of(settings_b, "ingest")
                await wait_until_polled(client, ingest, str(settings_b.build_id), [queue])
                code, out = await run_cli(
                    settings_b, "deploy", "promote", str(settings_b.build_id), "--kind", "ingest"
                )
                assert code == 0, out
                later = await client.start_workflow(
                    PurgeTombstonesWorkflow.run, purge, id=f"purge-{uuid.uuid4()}", task_queue=queue
                )
                await later.result()
                assert await build_of(later) == settings_b.build_id
                info = (await later.describe()).raw_description.workflow_execution_info.versioning_info
                assert info.behavior == 2  # VERSIONING_BEHAVIOR_AUTO_UPGRADE

                # A build no worker polls is refused, not routed to (its runs would wait): nothing changes.
                nobody = f"{settings_b.build_id}-nobody"
                code, out = await run_cli(
                    settings_b, "deploy", "promote", nobody, "--kind", "ingest", "--wait", "1"
                )
                assert code == 1 and f"no worker of build {nobody}" in out, out
                still = await describe(client, ingest, details=False)
                assert still and still.current == settings_b.build_id
                assert not db_rows(
                    services, "SELECT 1 FROM audit_events WHERE details->>'build' = %s", nobody
                )
    finally:
        await res_a.close()
        await res_b.close()


async def test_the_eager_gate_keeps_its_answer_while_a_routing_change_propagates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A recording stand-in for Temporal's answer: while the change is IN_PROGRESS a routed start can
    wait seconds (bench/REPORT.md, rollout), so the gate holds until the change has settled."""
    from infra.runtime import deployments

    answers = [
        DeploymentStatus("d", current="b", ramping=None, ramp_percentage=0, builds=[], settled=False),
        DeploymentStatus("d", current="b", ramping=None, ramp_percentage=0, builds=[], settled=True),
    ]

    async def next_answer(*_args: object, **_kw: object) -> DeploymentStatus:
        return answers.pop(0)

    monkeypatch.setattr(deployments, "describe", next_answer)
    gate = EagerGate(client=None, deployment="d", build="a")  # type: ignore[arg-type]
    await gate.refresh()
    assert gate.allowed  # still a's routing as far as the task queues know
    await gate.refresh()
    assert not gate.allowed
