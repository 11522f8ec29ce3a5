"""Start a chat turn, or join it: the workflow id derives from tenant, conversation and Idempotency-Key."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

from fastapi import HTTPException
from opentelemetry import trace
from temporalio.client import WorkflowHandle
from temporalio.common import TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from activities.adapters.admission import Overloaded
from activities.adapters.tenant_keys import KeyShredded, tenant_of_workflow
from activities.contracts.sampling import Sampling
from activities.contracts.turn import ChatTurnInput, ChatTurnResult, Message
from activities.logic.input_guard import GuardedInput, InputRejected, guard_input
from activities.logic.pii import redact
from api.core.errors import ApiError
from infra.runtime.resources import Resources
from infra.telemetry.span_store import TURN_ID
from workflows.search_attributes import turn_attributes

_REJECTION_STATUS = {
    "empty_message": 422,
    "invalid_text": 422,
    "message_too_long": 413,
    "content_policy_violation": 400,
}


def turn_id_for(tenant_id: uuid.UUID, conversation_id: uuid.UUID, idempotency_key: str) -> str:
    return f"turn-{tenant_id}-{conversation_id}-{idempotency_key}"


def request_fingerprint(turn: ChatTurnInput) -> str:
    """What a retried POST must repeat to join the turn: everything the caller chose, not the ids."""
    asked = turn.model_dump(mode="json", include=_ASKED)
    for name in ("sampling", "images", "tool_exchange"):
        if asked.get(name) is None:
            asked.pop(name, None)  # as turns recorded before these fields hashed
    return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()


_ASKED = {
    "conversation_id",
    "user_text",
    "history",
    "images",
    "tool_exchange",
    "model",
    "max_tokens",
    "temperature",
    "sampling",
    "latency_budget_ms",
    "interactive",
    "webhook_url",
}


async def _same_request(handle: WorkflowHandle[Any, Any], fingerprint: str) -> bool:
    # The start response says whether this call started the turn (then there is nothing to compare);
    # the SDK keeps it private, so without it the turn's memo is read back.
    response = getattr(handle, "_start_workflow_response", None)
    if response is not None and getattr(response, "started", False):
        return True
    desc = await handle.describe()
    recorded = await desc.memo_value("request_fingerprint", None)
    return recorded is None or recorded == fingerprint  # None: a turn from before fingerprints


def tenant_of_turn(turn_id: str) -> str | None:
    """The tenant id inside a turn id, or None when it is not one of ours."""
    found = tenant_of_workflow(turn_id)
    return str(found) if found else None


@dataclass(frozen=True)
class TurnRequest:
    """What a caller asks of one turn: the one shape every route hands to `start_turn`."""

    tenant_id: uuid.UUID
    conversation_id: uuid.UUID
    text: str
    request_id: str
    idempotency_key: str | None = None
    # The tenant's PII policy (kind → redact | mask | allow).
    pii_policy: dict[str, str] = field(default_factory=dict)
    # Given by OpenAI-style requests that carry their own history; else the turn loads it.
    history: list[Message] | None = None
    # The user message's images (OpenAI `image_url` parts), for models that declare vision.
    images: list[Message] | None = None
    # The tool calls and results after the user's message (activities/contracts/turn.py).
    tool_exchange: list[Message] | None = None
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    sampling: Sampling | None = None
    latency_budget_ms: int | None = None
    interactive: bool = True
    webhook_url: str | None = None
    # At capacity, answer from the tenant's documents (no model) instead of refusing with 503.
    answer_when_shed: bool = False


async def start_turn(
    res: Resources, req: TurnRequest, audit: dict[str, object] | None = None
) -> tuple[str, WorkflowHandle[object, ChatTurnResult]]:
    """Start the turn (routing picks its model in the workflow), or join it. Non-interactive turns go
    to the batch queue and its own workers; interactive ones start eagerly in this process's worker.
    ``audit`` collects what the audit trail records of the request (refusals, PII kinds found)."""
    audit = {} if audit is None else audit
    guarded = _guard(res, req, audit)
    turn = _turn_input(res, req, guarded, _redact_tool_results(req, audit))
    # `turnflow trace TURN_ID` finds the turn's trace by this (the request's span is its root).
    trace.get_current_span().set_attribute(TURN_ID, turn.turn_id)
    if req.interactive and not await _admit(res, turn, audit, req.answer_when_shed):
        turn.sources_only = True
    # Only a turn a client may join again (it named a key) needs to remember what was asked.
    fingerprint = request_fingerprint(turn) if req.idempotency_key else None
    handle = await _start(res, turn, fingerprint)
    if fingerprint and not await _same_request(handle, fingerprint):
        # Joining would answer this request with another one's turn (IETF Idempotency-Key draft: 422).
        audit["refused"] = "idempotency_key_reused"
        raise ApiError(
            422,
            f"Idempotency-Key {req.idempotency_key!r} was used for a different request in this conversation",
            code="idempotency_key_reused",
        )
    return turn.turn_id, handle


def _guard(res: Resources, req: TurnRequest, audit: dict[str, object]) -> GuardedInput:
    """Before Temporal: raw PII never reaches history (what the tenant's policy allows aside)."""
    try:
        guarded = guard_input(req.text, res.safety, req.pii_policy)
    except InputRejected as exc:
        audit["refused"] = exc.code
        raise HTTPException(_REJECTION_STATUS[exc.code], str(exc)) from exc
    if guarded.pii_counts:
        audit["pii_redacted"] = guarded.pii_counts  # what kinds, how many: never the values
    return guarded


def _redact_tool_results(req: TurnRequest, audit: dict[str, object]) -> list[Message] | None:
    """A tool's output is data about someone as much as the message is: the same PII policy."""
    if not req.tool_exchange:
        return None
    counts = Counter(cast(dict[str, int], audit.get("pii_redacted") or {}))
    exchange = []
    for message in req.tool_exchange:
        if message["role"] == "tool" and message.get("content"):
            redaction = redact(message["content"], req.pii_policy)
            counts.update(redaction.counts)
            message = {**message, "content": redaction.text}
        exchange.append(message)
    if counts:
        audit["pii_redacted"] = dict(counts)
    return exchange


def _turn_input(
    res: Resources, req: TurnRequest, guarded: GuardedInput, tool_exchange: list[Message] | None
) -> ChatTurnInput:
    return ChatTurnInput(
        options=res.policy.options_for("chat_turn"),
        turn_id=turn_id_for(req.tenant_id, req.conversation_id, req.idempotency_key or str(uuid.uuid4())),
        tenant_id=str(req.tenant_id),
        conversation_id=str(req.conversation_id),
        request_id=req.request_id,
        user_text=guarded.text,
        pii_counts=guarded.pii_counts,
        pii_policy=req.pii_policy,
        history=req.history,
        images=req.images,
        tool_exchange=tool_exchange,
        model=req.model,
        max_tokens=req.max_tokens,
        temperature=req.temperature,
        sampling=req.sampling,
        retrieval_k=res.settings.retrieval_k,
        latency_budget_ms=req.latency_budget_ms,
        interactive=req.interactive,
        webhook_url=req.webhook_url,
    )


async def _admit(res: Resources, turn: ChatTurnInput, audit: dict[str, object], degrade: bool) -> bool:
    """Batch turns queue by design; an interactive one the platform cannot serve now is refused now,
    or (``degrade``) admitted to be answered from the sources only: False then."""
    timeout = turn.options.execution_timeout
    try:
        await res.admission.admit(turn.turn_id, timeout.total_seconds() if timeout else 600.0)
        return True
    except Overloaded as exc:
        if degrade:
            audit["degraded"] = "overloaded"
            return False
        audit["refused"] = "overloaded"
        raise ApiError(
            503,
            str(exc),
            code="overloaded",
            headers={"Retry-After": str(exc.retry_after_s)},
            retryable=True,
        ) from exc


async def _start(
    res: Resources, turn: ChatTurnInput, fingerprint: str | None
) -> WorkflowHandle[object, ChatTurnResult]:
    queue = res.policy.workflows["chat_turn"].task_queue if turn.interactive else "batch"
    try:
        return await res.temporal.start_workflow(
            "chat_turn",
            turn,
            id=turn.turn_id,
            task_queue=res.policy.queue(queue),
            execution_timeout=turn.options.execution_timeout,
            result_type=ChatTurnResult,
            # A retried POST while the turn runs joins it; after it ended, the start is refused (below).
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            memo={"request_fingerprint": fingerprint} if fingerprint else None,
            search_attributes=TypedSearchAttributes(
                turn_attributes(turn.tenant_id, turn.conversation_id, turn.model)
            ),
            # The workflow's first task runs in this process's worker: no server round trip (while its
            # build is the one turns should go to).
            request_eager_start=res.settings.api_worker
            and turn.interactive
            and (res.eager_gate is None or res.eager_gate.allowed),
        )
    except WorkflowAlreadyStartedError:
        return res.temporal.get_workflow_handle(turn.turn_id, result_type=ChatTurnResult)
    except KeyShredded as exc:
        if turn.interactive:
            await res.admission.release(turn.turn_id)
        raise ApiError(
            410, "this tenant's data was erased (its keys destroyed)", code="tenant_erased"
        ) from exc
    except BaseException:
        if turn.interactive:
            await res.admission.release(turn.turn_id)  # never started: it holds no place
        raise
