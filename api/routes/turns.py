"""Chat turns: post a message (SSE or JSON), resume a turn's stream, cancel it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, HttpUrl, model_validator
from sse_starlette.sse import EventSourceResponse
from temporalio.client import WorkflowExecutionDescription, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from activities.adapters.stream_tokens import StreamGrant
from activities.adapters.turn_events import EVENT_TYPES, TurnEvent
from activities.contracts.turn import ChatTurnResult
from activities.logic.webhook_targets import WebhookRefused
from api.core.deps import DrainDep, ResourcesDep, get_drain, refuse_while_draining
from api.core.drain import Drain
from api.core.errors import ApiError, error_responses, turn_error_response
from api.core.tenancy import StreamReaderDep, TenantDep, require, tokens_within_limit
from api.core.text_fields import StorableStr
from api.routes.conversations import require_conversation
from api.services.turn_starter import TurnRequest, start_turn, tenant_of_turn
from api.services.turn_stream import as_sse, follow
from infra.runtime.resources import Resources
from workers.replay import fetch_history, turn_audit

router = APIRouter(tags=["turns"])
# A turn's event stream: a key, or the turn's stream token (api/core/tenancy.py: stream_reader).
stream_router = APIRouter(tags=["turns"])

# An event's `id:` (its Redis stream position), as a client sends it back to resume.
EVENT_ID = r"^\d{1,19}(-\d{1,19})?$"
SSE_HEADERS = {"X-Accel-Buffering": "no", "Cache-Control": "no-cache"}
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]


class MessageCreate(BaseModel):
    content: StorableStr = Field(min_length=1, description="the user's message")
    stream: bool = True
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0, description="default: the model's")
    model: StorableStr | None = Field(default=None, max_length=200, description="a registry model to prefer")
    latency_budget_ms: int | None = Field(
        default=None,
        ge=1,
        le=600_000,
        description="first-token budget: routing prefers a model that meets it",
    )
    interactive: bool = Field(
        default=True,
        description="false: a batch turn, run on its own queue; answered 202 with the turn to poll",
    )
    webhook_url: HttpUrl | None = Field(
        default=None, description="non-interactive turns: POSTed the turn's result when it ends"
    )

    @model_validator(mode="after")
    def _webhooks_are_for_batch_turns(self) -> MessageCreate:
        # An interactive caller has the stream (or the JSON answer); a webhook would only hold it up.
        if self.webhook_url is not None and self.interactive:
            raise ValueError("webhook_url is for non-interactive turns: send it with interactive: false")
        return self


class MessageCreateWithConversation(MessageCreate):
    conversation_id: uuid.UUID


class TurnQueued(BaseModel):
    turn_id: str
    status: str
    status_url: str


# One SSE event: `id` (its stream position, for Last-Event-ID), `event`, and `data` as JSON.
_SSE = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "required": ["event", "data"],
            "properties": {
                "id": {"type": "string"},
                "event": {"enum": list(EVENT_TYPES)},
                "data": {"type": "string", "contentMediaType": "application/json"},
            },
        }
    }
}
_TURN_STARTED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "`text/event-stream` (events turn, token, reset, done, error, redact); "
        "with `stream: false`, the turn's result as JSON",
        "model": ChatTurnResult,
        "content": _SSE,
    },
    202: {"description": "Non-interactive: queued; poll `Location`", "model": TurnQueued},
    **error_responses(400, 404, 410, 503),
}


def request_id(request: Request) -> str:
    return str(request.state.request_id)


def _sse(
    res: Resources,
    drain: Drain,
    handle: WorkflowHandle[Any, ChatTurnResult],
    turn_id: str,
    after: str | None,
    stream_token: str | None = None,
) -> EventSourceResponse:
    async def events() -> AsyncIterator[dict[str, Any]]:
        # A client that goes away stops only this generator; the turn runs on and is persisted.
        async for event in follow(res.events, handle, turn_id, after, feed=res.event_feed):
            if stream_token is not None and event.type == "turn":
                # To this client only: the event log and the turn's history never hold it.
                event = TurnEvent(event.id, event.type, {**event.data, "stream_token": stream_token})
            yield as_sse(event)

    headers = {**SSE_HEADERS, "X-Turn-ID": turn_id}
    if stream_token is not None:
        headers["X-Stream-Token"] = stream_token
    # If this process leaves, the client is told to reconnect (it resumes with Last-Event-ID).
    stream = drain.until_drained(events())
    return EventSourceResponse(stream, ping=15, headers=headers)


async def _json_result(handle: WorkflowHandle[Any, ChatTurnResult], turn_id: str) -> JSONResponse:
    result = await handle.result()
    if result.status == "error":
        return turn_error_response(result.error or {}, turn_id)
    return JSONResponse(result.model_dump(mode="json"), headers={"X-Turn-ID": turn_id})


async def _check_webhook(res: Resources, url: str, hosts: tuple[str, ...], audit: dict[str, object]) -> None:
    """The webhook rules, now (delivery checks them again, with a fresh resolution): 400 naming the rule."""
    try:
        await res.webhooks.target(url, list(hosts))
    except WebhookRefused as exc:
        audit["refused"] = "webhook_refused"
        audit["webhook"] = {"rule": exc.code, "url": url}
        raise ApiError(400, str(exc), code="webhook_refused") from exc


async def _post_message(
    res: Resources,
    request: Request,
    tenant: uuid.UUID,
    conversation_id: uuid.UUID,
    body: MessageCreate,
    idempotency_key: str | None,
) -> Any:
    """Both message routes: the conversation must be the tenant's, then the turn starts (or is joined)."""
    audit: dict[str, object] = {}
    request.state.audit = audit
    await require_conversation(res, tenant, conversation_id)
    if body.webhook_url is not None:
        await _check_webhook(res, str(body.webhook_url), request.state.principal.webhook_hosts, audit)
    req = TurnRequest(
        tenant_id=tenant,
        conversation_id=conversation_id,
        text=body.content,
        request_id=request_id(request),
        idempotency_key=idempotency_key,
        pii_policy=request.state.principal.pii,
        answer_when_shed=request.state.principal.answer_when_shed,
        model=body.model,
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        latency_budget_ms=body.latency_budget_ms,
        interactive=body.interactive,
        webhook_url=str(body.webhook_url) if body.webhook_url else None,
    )
    turn_id, handle = await start_turn(res, req, audit)
    if not body.interactive:
        # Queued behind other batch work, never in front of an interactive turn: poll, or await the webhook.
        status_url = f"/v1/turns/{turn_id}"
        return JSONResponse(
            {"turn_id": turn_id, "status": "queued", "status_url": status_url},
            status_code=202,
            headers={"Location": status_url, "X-Turn-ID": turn_id},
        )
    if body.stream:
        principal = request.state.principal
        token = await res.stream_tokens.mint(StreamGrant(tenant, turn_id, principal.requests_per_min))
        return _sse(res, get_drain(request), handle, turn_id, None, token)
    return await _json_result(handle, turn_id)


@router.post(
    "/v1/conversations/{conversation_id}/messages",
    response_model=None,
    dependencies=[Depends(refuse_while_draining), Depends(tokens_within_limit)],
    responses=_TURN_STARTED,
)
async def post_message(
    conversation_id: uuid.UUID,
    body: MessageCreate,
    request: Request,
    res: ResourcesDep,
    tenant: TenantDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Start a turn; answers `text/event-stream` (events turn, token, reset, done, error, redact) or JSON."""
    return await _post_message(res, request, tenant, conversation_id, body, idempotency_key)


@router.post(
    "/v1/messages",
    response_model=None,
    dependencies=[Depends(refuse_while_draining), Depends(tokens_within_limit)],
    responses=_TURN_STARTED,
)
async def post_message_flat(
    body: MessageCreateWithConversation,
    request: Request,
    res: ResourcesDep,
    tenant: TenantDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """The same as `POST /v1/conversations/{id}/messages`, with the conversation id in the body."""
    return await _post_message(res, request, tenant, body.conversation_id, body, idempotency_key)


async def _turn_handle(
    res: Resources, tenant: uuid.UUID, turn_id: str
) -> tuple[WorkflowHandle[Any, ChatTurnResult], WorkflowExecutionDescription]:
    """The tenant's turn and its state, or 404 (another tenant's turn does not exist for this one)."""
    if tenant_of_turn(turn_id) != str(tenant):
        raise HTTPException(404, f"turn {turn_id} not found")
    handle = res.temporal.get_workflow_handle(turn_id, result_type=ChatTurnResult)
    try:
        return handle, await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise HTTPException(404, f"turn {turn_id} not found") from exc
        raise


class TurnState(BaseModel):
    turn_id: str
    # queued or running; then completed, cancelled or error (the turn's own outcome)
    status: str
    result: ChatTurnResult | None = None


@router.get("/v1/turns/{turn_id}", responses=error_responses(404))
async def read_turn(turn_id: str, res: ResourcesDep, tenant: TenantDep) -> TurnState:
    """A turn's state, and its result once it has ended (how non-interactive callers poll)."""
    handle, desc = await _turn_handle(res, tenant, turn_id)
    if desc.status == WorkflowExecutionStatus.RUNNING:
        # Started and its first task scheduled, and nothing since: no worker has picked it up yet.
        return TurnState(turn_id=turn_id, status="running" if desc.history_length > 2 else "queued")
    if desc.status == WorkflowExecutionStatus.COMPLETED:
        result = await handle.result()
        return TurnState(turn_id=turn_id, status=result.status, result=result)
    return TurnState(turn_id=turn_id, status="error")


@router.get(
    "/v1/turns/{turn_id}/audit", dependencies=[Depends(require("admin"))], responses=error_responses(404)
)
async def audit_turn(turn_id: str, res: ResourcesDep, tenant: TenantDep) -> dict[str, Any]:
    """For compliance (admin keys): the turn's history replayed against the current workflow code, and
    reconstructed (input as redacted, route, retrieved chunks, exact prompt, model, output, moderation)."""
    await _turn_handle(res, tenant, turn_id)
    return await turn_audit(res, await fetch_history(res, turn_id))


@stream_router.get(
    "/v1/turns/{turn_id}/events",
    response_model=None,
    dependencies=[Depends(refuse_while_draining)],
    responses={200: {"description": "The turn's events", "content": _SSE}, **error_responses(404, 503)},
)
async def turn_events(
    turn_id: str,
    res: ResourcesDep,
    drain: DrainDep,
    reader: StreamReaderDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", pattern=EVENT_ID)] = None,
    after: Annotated[str | None, Query(pattern=EVENT_ID, description="as Last-Event-ID")] = None,
) -> EventSourceResponse:
    """Replay the turn's events after `Last-Event-ID` (or `?after=`), then follow it live. With a
    key (chat scope), or with the turn's stream token (`?stream_token=`, for a browser's EventSource)."""
    if reader.turn_id is not None and reader.turn_id != turn_id:
        raise HTTPException(
            401, "this stream token reads another turn", headers={"WWW-Authenticate": "Bearer"}
        )
    handle, _ = await _turn_handle(res, reader.tenant_id, turn_id)
    return _sse(res, drain, handle, turn_id, last_event_id or after)


@router.post("/v1/turns/{turn_id}/cancel", status_code=202, responses=error_responses(404, 409))
async def cancel_turn(turn_id: str, res: ResourcesDep, tenant: TenantDep) -> dict[str, str]:
    """Ask the turn to stop generating; what was streamed is kept, and the turn ends `cancelled`."""
    handle, desc = await _turn_handle(res, tenant, turn_id)
    if desc.status != WorkflowExecutionStatus.RUNNING:
        raise HTTPException(409, f"turn {turn_id} has already ended")
    # The process streaming the reply hears it at once (activities/adapters/turn_cancels.py). A local
    # inference would hear of a workflow cancel only at its workflow task's next heartbeat, seconds
    # away, and a cancel landing in that task makes Temporal run its steps again; a regular one also
    # takes the workflow cancel.
    await res.cancels.request(turn_id)
    if not res.policy.activities["infer"].local:
        await handle.cancel()
    return {"turn_id": turn_id, "status": "cancelling"}
