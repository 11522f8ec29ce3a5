"""Start, signal and look at canary rollouts (workflows/canary_rollout.py), for the CLI and the
dashboard: one workflow per canary, id `rollout-NAME`, on the ingest queue."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle, WorkflowQueryFailedError
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError

from activities.contracts.rollout import RolloutInput, RolloutResult
from infra.config.canaries import declared_canaries
from infra.config.policy import Policy
from infra.config.rollouts import RolloutPolicy
from workflows.search_attributes import CANARY, MODEL, ROLLOUT_SHARE, ROLLOUT_STATE

log = logging.getLogger(__name__)
WORKFLOW = "canary_rollout"
# A state query waits for a worker to answer it; a page or a CLI waits no longer than this.
QUERY_TIMEOUT = timedelta(seconds=5)


def rollout_id(name: str) -> str:
    return f"rollout-{name}"


def rollout_input(
    policy: Policy, name: str, actor: str, overrides: dict[str, object] | None = None
) -> RolloutInput:
    """The rollout temporal.yaml declares for this canary; `overrides` (steps, hold, min_turns,
    check_every) change this one rollout and are validated like temporal.yaml."""
    canary = declared_canaries(policy.models, policy.prompts).get(name)
    if canary is None:
        raise LookupError(
            f"{name!r} is not a canary: give a model or prompt template canary_of in temporal.yaml"
        )
    try:
        plan = RolloutPolicy.model_validate({**policy.rollouts.model_dump(), **(overrides or {})})
    except ValidationError as exc:
        error = exc.errors()[0]
        raise LookupError(f"{'.'.join(map(str, error['loc']))}: {error['msg']}") from None
    return RolloutInput(
        options=policy.options_for(WORKFLOW),
        kind=canary.kind,
        name=name,
        base=canary.base,
        steps=plan.steps,
        hold=plan.hold,
        min_turns=plan.min_turns,
        check_every=plan.check_every,
        gates=plan.gates,
        actor=actor,
    )


async def start_rollout(
    client: Client, policy: Policy, inp: RolloutInput
) -> WorkflowHandle[Any, RolloutResult]:
    """Raises WorkflowAlreadyStartedError when this canary's rollout is running."""
    pairs: list[SearchAttributePair[str]] = [
        SearchAttributePair(CANARY, inp.name),
        SearchAttributePair(ROLLOUT_STATE, "running"),
        SearchAttributePair(ROLLOUT_SHARE, "0%"),
    ]
    if inp.kind == "model":
        pairs.append(SearchAttributePair(MODEL, inp.name))
    return await client.start_workflow(
        WORKFLOW,
        inp,
        id=rollout_id(inp.name),
        task_queue=policy.queue(policy.workflows[WORKFLOW].task_queue),
        execution_timeout=inp.options.execution_timeout,
        search_attributes=TypedSearchAttributes(pairs),
        result_type=RolloutResult,
    )


async def rollout_state(client: Client, name: str) -> dict[str, Any]:
    """The rollout's state: its query while it runs, its result once it ended."""
    handle = client.get_workflow_handle(rollout_id(name), result_type=RolloutResult)
    described = await handle.describe()
    if described.status == WorkflowExecutionStatus.RUNNING:
        try:
            return {"name": name, **(await handle.query("state", rpc_timeout=QUERY_TIMEOUT))}
        except (RPCError, WorkflowQueryFailedError) as exc:
            # No ingest worker answered (all down, or busy): what the search attributes last said.
            attrs = described.typed_search_attributes
            shown = attrs.get(ROLLOUT_SHARE)
            return {
                "name": name,
                "status": attrs.get(ROLLOUT_STATE) or "running",
                "share": float(shown.rstrip("%")) / 100 if shown else None,
                "reason": f"no worker answered its state query ({exc})",
            }
    state: dict[str, Any] = {
        "name": name,
        "status": described.status.name.lower() if described.status else "?",
    }
    if described.status == WorkflowExecutionStatus.COMPLETED:
        ended = (await handle.result()).model_dump(mode="json")
        history = ended.pop("steps")
        state |= ended | {"history": history, "step": len(history)}
    return state


async def rollout_states(client: Client, running_only: bool = False, limit: int = 20) -> list[dict[str, Any]]:
    """The newest rollouts first (each canary's latest), from Temporal's visibility."""
    query = f"WorkflowType = '{WORKFLOW}'"
    if running_only:
        query += " AND ExecutionStatus = 'Running'"
    seen: list[str] = []
    async for execution in client.list_workflows(query, limit=limit):
        name = execution.id.removeprefix("rollout-")
        if name not in seen:
            seen.append(name)
    states = []
    for name in seen:
        try:
            states.append(await rollout_state(client, name))
        except RPCError as exc:  # it ended between the listing and the query: the next look shows it
            log.info("rollout %s: %s", name, exc)
    return states
