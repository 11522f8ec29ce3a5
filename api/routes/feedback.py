"""Users' verdicts on replies: `POST` records (or replaces) the key's verdict on a message, `DELETE`
withdraws it. Comments are PII-redacted by the tenant's policy and sealed like any user text."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Request, Response
from pydantic import BaseModel, Field

from activities.logic.pii import redact
from api.core.deps import ResourcesDep
from api.core.errors import error_responses
from api.core.tenancy import PrincipalDep
from api.core.text_fields import StorableStr
from db.feedback import find_reply, record_feedback, withdraw_feedback
from infra.telemetry import metrics

router = APIRouter(tags=["feedback"])

Reason = Literal["inaccurate", "unhelpful", "unsafe", "other"]
# The OpenAI-compatible route's completion id is the message id with OpenAI's prefix.
COMPLETION_PREFIX = "chatcmpl-"
MessageId = Annotated[
    str,
    Path(
        max_length=60,
        description="the reply's id (the `done` event's `message_id`, or a chat completion's `id`)",
    ),
]


class FeedbackIn(BaseModel):
    score: Literal[-1, 1] = Field(description="+1 (thumbs up) or -1 (thumbs down)")
    reason: Reason | None = Field(default=None, description="why, for a thumbs down most of all")
    comment: StorableStr | None = Field(default=None, max_length=2000)


class FeedbackOut(BaseModel):
    message_id: uuid.UUID
    score: int
    reason: str | None
    comment: str | None = Field(description="as stored: PII redacted")
    replaced: bool = Field(description="whether this replaced the key's earlier verdict")
    created_at: datetime
    updated_at: datetime


def _message_uuid(message_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(message_id.removeprefix(COMPLETION_PREFIX))
    except ValueError as exc:
        raise HTTPException(404, f"message {message_id!r} not found") from exc


@router.post("/v1/messages/{message_id}/feedback", responses=error_responses(400, 404))
async def give_feedback(
    message_id: MessageId, body: FeedbackIn, request: Request, res: ResourcesDep, principal: PrincipalDep
) -> FeedbackOut:
    """Record this key's verdict on a reply; a second post replaces it. Another tenant's message,
    or a question rather than a reply, is not found."""
    mid = _message_uuid(message_id)
    comment = redact(body.comment, principal.pii).text if body.comment else None
    sealed = await res.sealer.seal(principal.tenant_id, comment) if comment else None
    async with res.sessions.begin() as session:
        reply = await find_reply(session, principal.tenant_id, mid)
        if reply is None:
            raise HTTPException(404, f"message {message_id!r} not found")
        row, replaced = await record_feedback(
            session, principal.tenant_id, mid, principal.key_id, body.score, body.reason, sealed
        )
    request.state.audit = {"score": body.score, "reason": body.reason, "replaced": replaced}
    metrics.feedback.add(1, {"model": reply.model or "", "version": reply.version or "", "score": body.score})
    return FeedbackOut(
        message_id=mid,
        score=row.score,
        reason=row.reason,
        comment=comment,
        replaced=replaced,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@router.delete("/v1/messages/{message_id}/feedback", status_code=204, responses=error_responses(404))
async def withdraw(
    message_id: MessageId, request: Request, res: ResourcesDep, principal: PrincipalDep
) -> Response:
    """Withdraw this key's verdict on a reply (404 when it gave none)."""
    mid = _message_uuid(message_id)
    async with res.sessions.begin() as session:
        reply = await find_reply(session, principal.tenant_id, mid)
        score = await withdraw_feedback(session, mid, principal.key_id) if reply else None
    if reply is None or score is None:
        raise HTTPException(404, f"no feedback of this key on message {message_id!r}")
    request.state.audit = {"withdrawn_score": score}
    metrics.feedback.add(
        1, {"model": reply.model or "", "version": reply.version or "", "score": "withdrawn"}
    )
    return Response(status_code=204)
