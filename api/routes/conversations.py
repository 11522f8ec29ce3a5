"""Conversations and their transcripts."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update

from activities.adapters.sealed_text import open_tool_calls
from api.core.deps import ResourcesDep
from api.core.errors import ApiError, error_responses
from api.core.tenancy import TenantDep
from api.core.text_fields import StorableObject, StorableStr
from api.services.erasure import erased_within, start_erasure
from db.documents import documents_cited
from db.engine import scope_to_tenant
from db.messages import create_conversation as db_create_conversation
from db.messages import list_conversations as db_list_conversations
from db.models import Conversation, Document, Message

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])
# How long DELETE waits for the erasure before answering 202 (it goes on either way): well inside the
# usual client and proxy timeouts of 30 s (CI's contract test timed out once on a slow host at 30).
ERASURE_WAIT_S = 10.0


class ConversationCreate(BaseModel):
    title: StorableStr | None = Field(default=None, max_length=500)
    metadata: StorableObject = Field(default_factory=dict)
    end_user: StorableStr | None = Field(
        default=None, max_length=200, description="your id for the person it is with (erasure by end user)"
    )


class ConversationUpdate(BaseModel):
    """Only the fields given change: a title (null clears it), the metadata (replaced whole)."""

    model_config = ConfigDict(extra="forbid")

    title: StorableStr | None = Field(default=None, max_length=500)
    metadata: StorableObject | None = None


class ConversationOut(BaseModel):
    id: uuid.UUID
    title: str | None
    metadata: dict[str, Any]
    end_user: str | None = None
    created_at: datetime
    updated_at: datetime | None = None


class ConversationPage(BaseModel):
    data: list[ConversationOut]
    # Pass it as `cursor` for the next page; null on the last one.
    next_cursor: str | None


class ErasureAccepted(BaseModel):
    erasure_id: str
    status: str


class MessageOut(BaseModel):
    id: uuid.UUID
    turn_id: str
    role: str
    content: str
    created_at: datetime
    model_id: str | None
    model_version: str | None
    # Which prompt template version the reply was assembled with (its conversation's arm).
    prompt_template_version: str | None
    finish_reason: str | None
    input_tokens: int | None
    output_tokens: int | None
    ttft_ms: float | None
    latency_ms: float | None
    redacted: bool
    retrieved_chunks: list[dict[str, Any]] | None
    # A reply's tool calls, or (role `tool`) the calls whose results the content holds.
    tool_calls: list[dict[str, Any]] | None = None
    # A question's images: `url` (a link), or `media_type`, `bytes` and `sha256` (an inline image).
    attachments: list[dict[str, Any]] | None = None
    # The documents a reply's retrieved passages came from, best first (what a chat page cites).
    sources: list[SourceOut] = Field(default_factory=list)


class SourceOut(BaseModel):
    document_id: uuid.UUID
    title: str | None
    source: str
    score: float


def _sources(m: Message, documents: dict[str, Document]) -> list[SourceOut]:
    """One per document, at its best passage's score, best first; deleted documents are not cited."""
    best: dict[str, float] = {}
    for chunk in m.retrieved_chunks or []:
        doc_id = str(chunk.get("document_id"))
        if doc_id in documents:
            best[doc_id] = max(best.get(doc_id, float("-inf")), float(chunk.get("score") or 0))
    return [
        SourceOut(document_id=documents[d].id, title=documents[d].title, source=documents[d].source, score=s)
        for d, s in sorted(best.items(), key=lambda item: -item[1])
    ]


async def _out(res: ResourcesDep, c: Conversation) -> ConversationOut:
    title = await res.sealer.open(c.tenant_id, c.title) if c.title is not None else None
    return ConversationOut(
        id=c.id,
        title=title,
        metadata=c.meta,
        end_user=c.end_user,
        created_at=c.created_at,
        updated_at=c.updated_at,
    )


def _cursor_of(c: Conversation) -> str:
    return base64.urlsafe_b64encode(f"{c.created_at.isoformat()}|{c.id}".encode()).decode()


def _read_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, _, cid = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(at), uuid.UUID(cid)
    except ValueError:  # bad base64 and bad UTF-8 are ValueErrors too
        raise ApiError(422, "cursor: not one this API gave out", code="validation_error") from None


async def get_conversation(res: ResourcesDep, tenant: uuid.UUID, conversation_id: uuid.UUID) -> Conversation:
    """The tenant's conversation, or 404: another tenant's conversation does not exist for this one."""
    async with res.sessions() as session:
        conv = await session.scalar(
            select(Conversation).where(Conversation.id == conversation_id, Conversation.tenant_id == tenant)
        )
    if conv is None:
        raise HTTPException(404, f"conversation {conversation_id} not found")
    return conv


async def require_conversation(res: ResourcesDep, tenant: uuid.UUID, conversation_id: uuid.UUID) -> None:
    """404 unless the tenant has this conversation: only its id is read (a turn's check, every turn)."""
    async with res.sessions() as session:
        found = await session.execute(
            select(Conversation.id).where(
                Conversation.id == conversation_id, Conversation.tenant_id == tenant
            )
        )
    if found.first() is None:
        raise HTTPException(404, f"conversation {conversation_id} not found")


@router.post("", status_code=201, responses=error_responses(400))
async def create_conversation(
    body: ConversationCreate, res: ResourcesDep, tenant: TenantDep
) -> ConversationOut:
    title = await res.sealer.seal(tenant, body.title) if body.title is not None else None
    async with res.sessions.begin() as session:
        created = await db_create_conversation(session, tenant, title, body.metadata, body.end_user)
    async with res.sessions() as session:
        return await _out(res, await session.get_one(Conversation, created))


@router.get("", responses=error_responses(422))
async def list_conversations(
    res: ResourcesDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        str | None, Query(max_length=200, description="`next_cursor` of the page before")
    ] = None,
    end_user: Annotated[str | None, Query(max_length=200, description="only this end user's")] = None,
) -> ConversationPage:
    """The key's tenant's conversations, newest first."""
    after = _read_cursor(cursor) if cursor else None
    async with res.sessions() as session:
        rows = await db_list_conversations(session, tenant, limit + 1, after, end_user)
    page, more = rows[:limit], len(rows) > limit
    return ConversationPage(
        data=[await _out(res, c) for c in page], next_cursor=_cursor_of(page[-1]) if more else None
    )


@router.patch("/{conversation_id}", responses=error_responses(400, 404))
async def update_conversation(
    conversation_id: uuid.UUID,
    body: ConversationUpdate,
    request: Request,
    res: ResourcesDep,
    tenant: TenantDep,
) -> ConversationOut:
    await get_conversation(res, tenant, conversation_id)
    changes: dict[str, Any] = {}
    if "title" in body.model_fields_set:
        changes["title"] = await res.sealer.seal(tenant, body.title) if body.title is not None else None
    if "metadata" in body.model_fields_set:
        changes["meta"] = body.metadata or {}
    # Which fields changed, never their values (a title may name a person).
    request.state.audit = {"changed": sorted(body.model_fields_set)}
    async with res.sessions.begin() as session:
        if changes:
            await session.execute(
                update(Conversation).where(Conversation.id == conversation_id).values(**changes)
            )
    return await _out(res, await get_conversation(res, tenant, conversation_id))


@router.get("/{conversation_id}", responses=error_responses(404))
async def read_conversation(
    conversation_id: uuid.UUID, res: ResourcesDep, tenant: TenantDep
) -> ConversationOut:
    return await _out(res, await get_conversation(res, tenant, conversation_id))


@router.get("/{conversation_id}/messages", responses=error_responses(404))
async def list_messages(
    conversation_id: uuid.UUID,
    res: ResourcesDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[MessageOut]:
    await get_conversation(res, tenant, conversation_id)
    async with res.sessions() as session:
        rows = (
            await session.scalars(
                select(Message)
                .where(Message.conversation_id == conversation_id)
                .order_by(Message.created_at, Message.role.desc())
                .limit(limit)
            )
        ).all()
    documents = {}
    if any(m.retrieved_chunks for m in rows):  # a transcript without retrieval costs no second read
        async with res.sessions.begin() as session:
            await scope_to_tenant(session, tenant)  # documents are behind row-level security
            documents = await documents_cited(session, tenant, rows)
    # A message moderation redacted keeps its row (the audit trail) but not its text.
    return [
        MessageOut.model_validate(
            {
                **{k: getattr(m, k) for k in MessageOut.model_fields if k != "sources"},
                "content": "" if m.redacted else await res.sealer.open(tenant, m.content),
                "tool_calls": (
                    await open_tool_calls(res.sealer, tenant, m.tool_calls)
                    if m.tool_calls and not m.redacted
                    else None
                ),
                "sources": _sources(m, documents),
                "attachments": [
                    {**a, "url": await res.sealer.open(tenant, a["url"])} if "url" in a else a
                    for a in m.attachments or []
                ]
                or None,
            }
        )
        for m in rows
    ]


@router.delete(
    "/{conversation_id}",
    responses={202: {"model": ErasureAccepted}, **error_responses(404, 503)},
)
async def erase_conversation(
    conversation_id: uuid.UUID, request: Request, res: ResourcesDep, tenant: TenantDep
) -> Any:
    """Erase the conversation now, from every store: its messages, its turns' workflow histories, event
    streams, context cache and trace spans. Answers the counts (never the content), or 202 while a long
    one still runs (asking again joins it)."""
    await get_conversation(res, tenant, conversation_id)
    principal = request.state.principal
    handle = await start_erasure(
        res, tenant, f"key:{principal.key_prefix}", conversation_ids=[str(conversation_id)]
    )
    request.state.audit = {"erasure": handle.id}
    counts = await erased_within(handle, ERASURE_WAIT_S)
    if counts is None:
        return JSONResponse({"erasure_id": handle.id, "status": "running"}, status_code=202)
    return counts
