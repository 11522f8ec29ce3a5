"""OpenAI-compatible chat completions, running the same durable turn (the `openai` client works unchanged).

Each request brings its own history, so it runs in a fresh conversation. An OpenAI stream cannot
take back text, so if the model restarts after text was sent (a `reset`), the stream ends with an
error chunk rather than showing the reply twice; a restart before any text goes unnoticed.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse

from activities.contracts.sampling import ToolCall
from api.core.deps import ResourcesDep, get_drain, refuse_while_draining
from api.core.errors import error_body, error_responses, turn_error_response
from api.core.tenancy import TenantDep, tokens_within_limit
from api.routes.feedback import COMPLETION_PREFIX
from api.routes.turns import SSE_HEADERS, IdempotencyKey, request_id
from api.services.chat_completion_input import (
    ChatCompletionRequest,
    output_problem,
    read_messages,
    read_sampling,
)
from api.services.turn_starter import TurnRequest, start_turn
from api.services.turn_stream import follow
from db.messages import create_conversation, message_id_for

router = APIRouter(prefix="/v1", tags=["openai-compatible"])


@router.get("/models")
async def list_models(res: ResourcesDep) -> dict[str, Any]:
    names = list(res.registry.models)
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "created": 0, "owned_by": "turnflow"} for n in names],
    }


def _chunk(cid: str, model: str, created: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _message(text: str, calls: list[ToolCall]) -> dict[str, Any]:
    if not calls:
        return {"role": "assistant", "content": text}
    return {"role": "assistant", "content": text or None, "tool_calls": [c.as_openai() for c in calls]}


def _tool_delta(piece: dict[str, Any]) -> dict[str, Any]:
    """A `tool_call` event in OpenAI's delta form: the first piece of a call names it."""
    call: dict[str, Any] = {"index": piece["index"], "function": {"arguments": piece.get("arguments", "")}}
    if "id" in piece:
        call |= {"id": piece["id"], "type": "function"}
    if "name" in piece:
        call["function"]["name"] = piece["name"]
    return {"tool_calls": [call]}


def _usage(done: dict[str, Any]) -> dict[str, int]:
    usage = done.get("usage") or {}
    prompt, completion = usage.get("input_tokens") or 0, usage.get("output_tokens") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


@router.post(
    "/chat/completions",
    response_model=None,
    dependencies=[Depends(refuse_while_draining), Depends(tokens_within_limit)],
    responses={
        200: {
            "description": "A `chat.completion`, or with `stream: true` `chat.completion.chunk` events",
            # Unnamed events, each `data` a chat.completion.chunk in JSON, the last one `[DONE]`.
            "content": {
                "text/event-stream": {
                    "schema": {
                        "type": "object",
                        "required": ["data"],
                        "properties": {"data": {"type": "string"}},
                    }
                }
            },
        },
        **error_responses(400, 410, 502, 503),
    },
)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    res: ResourcesDep,
    tenant: TenantDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    read = read_messages(body, res.registry)
    sampling = read_sampling(body, res.registry)
    title = await res.sealer.seal(tenant, "chat.completions")
    async with res.sessions.begin() as session:
        conversation_id = await create_conversation(session, tenant, title, end_user=body.user)
    audit: dict[str, object] = {}
    request.state.audit = audit
    req = TurnRequest(
        tenant_id=tenant,
        conversation_id=conversation_id,
        text=read.text,
        request_id=request_id(request),
        idempotency_key=idempotency_key,
        pii_policy=request.state.principal.pii,
        answer_when_shed=request.state.principal.answer_when_shed,
        history=read.history,
        images=read.images,
        tool_exchange=read.tool_exchange,
        model=body.model,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        sampling=sampling,
    )
    turn_id, handle = await start_turn(res, req, audit)
    # The completion's id names the reply's message (feedback: POST /v1/messages/{id}/feedback).
    message_id = message_id_for(turn_id, "assistant")
    cid, created, asked = f"{COMPLETION_PREFIX}{message_id}", int(time.time()), body.model or "turnflow"
    ids = {"X-Turn-ID": turn_id, "X-Message-ID": str(message_id)}

    if not body.stream:
        result = await handle.result()
        if result.status == "error":
            return turn_error_response(result.error or {}, turn_id)
        if problem := output_problem(body.response_format, result.text, result.finish_reason):
            return JSONResponse(
                error_body(problem, "server_error", "invalid_model_output", turn_id=turn_id),
                status_code=502,
                headers=ids,
            )
        usage = _usage(
            {"usage": {"input_tokens": result.input_tokens, "output_tokens": result.output_tokens}}
        )
        completion = {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": result.model or asked,
            "choices": [
                {
                    "index": 0,
                    "message": _message(result.text, result.tool_calls),
                    "finish_reason": result.finish_reason,
                }
            ],
            "usage": usage,
        }
        return JSONResponse(completion, headers=ids)

    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    async def chunks() -> AsyncIterator[dict[str, Any]]:
        # Every chunk names the model that answers: the first waits for the first token (or the end),
        # by when `turn` or a fallback's `reset` said which model that is. A reset after text ends the
        # stream, so the name never changes.
        model, parts = asked, []
        sent_role = sent_text = False
        async for event in follow(res.events, handle, turn_id, None, moderation=False, feed=res.event_feed):
            if event.type == "reset" and sent_text:
                yield {
                    "data": json.dumps(
                        error_body(
                            "the model restarted mid-reply; retry the request", "server_error", "stream_reset"
                        )
                    )
                }
                break
            if event.type in ("turn", "reset"):
                model = str(event.data.get("model") or model)
                continue
            if not sent_role:
                sent_role = True
                yield {
                    "data": json.dumps(
                        _chunk(cid, model, created, {"role": "assistant", "content": ""}, None)
                    )
                }
            if event.type == "tool_call":
                sent_text = True
                yield {"data": json.dumps(_chunk(cid, model, created, _tool_delta(event.data), None))}
            elif event.type == "token":
                sent_text = True
                parts.append(event.data["text"])
                yield {"data": json.dumps(_chunk(cid, model, created, {"content": event.data["text"]}, None))}
            elif event.type == "error":
                yield {
                    "data": json.dumps(
                        error_body(
                            str(event.data.get("message")), "server_error", str(event.data.get("code"))
                        )
                    )
                }
                break
            elif event.type == "done":
                finish = event.data.get("finish_reason")
                if problem := output_problem(body.response_format, "".join(parts), finish):
                    yield {"data": json.dumps(error_body(problem, "server_error", "invalid_model_output"))}
                    break
                yield {
                    "data": json.dumps(
                        _chunk(cid, model, created, {}, event.data.get("finish_reason") or "stop")
                    )
                }
                if include_usage:
                    yield {
                        "data": json.dumps(
                            {
                                "id": cid,
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": model,
                                "choices": [],
                                "usage": _usage(event.data),
                            }
                        )
                    }
                break
        yield {"data": "[DONE]"}

    # These clients cannot resume elsewhere: a leaving process lets the stream finish (api/core/drain.py).
    stream = get_drain(request).counted(chunks())
    return EventSourceResponse(stream, ping=15, headers={**SSE_HEADERS, **ids})
