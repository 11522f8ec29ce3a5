"""Start an erasure (ErasureWorkflow) and wait a bounded time for it: one place for the API's
`DELETE /v1/conversations/{id}` and the operators' `turnflow erase`."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

from temporalio.client import WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy

from activities.contracts.maintenance import ErasureCounts, ErasureInput
from infra.runtime.resources import Resources


def erasure_id(tenant: uuid.UUID, conversation_ids: list[str] | None, end_user: str | None) -> str:
    """Names the request, not its content: an end user's id is hashed."""
    if conversation_ids is not None:
        scope = "conv-" + hashlib.sha256(",".join(sorted(conversation_ids)).encode()).hexdigest()[:24]
    elif end_user is not None:
        scope = "user-" + hashlib.sha256(end_user.encode()).hexdigest()[:24]
    else:
        scope = "tenant"
    return f"erase-{tenant}-{scope}"


async def start_erasure(
    res: Resources,
    tenant: uuid.UUID,
    requested_by: str,
    *,
    conversation_ids: list[str] | None = None,
    end_user: str | None = None,
) -> WorkflowHandle[object, ErasureCounts]:
    """Asking again while it runs joins it; after it finished, it runs again (finding what is left)."""
    options = res.policy.options_for("erase_data")
    return await res.temporal.start_workflow(
        "erase_data",
        ErasureInput(
            options=options,
            tenant_id=str(tenant),
            conversation_ids=conversation_ids,
            end_user=end_user,
            requested_by=requested_by,
        ),
        id=erasure_id(tenant, conversation_ids, end_user),
        task_queue=res.policy.queue(res.policy.workflows["erase_data"].task_queue),
        execution_timeout=options.execution_timeout,
        result_type=ErasureCounts,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


async def erased_within(
    handle: WorkflowHandle[object, ErasureCounts], seconds: float
) -> ErasureCounts | None:
    """The counts once it finished, or None if it is still running after ``seconds``."""
    try:
        return await asyncio.wait_for(asyncio.shield(handle.result()), seconds)
    except TimeoutError:
        return None
