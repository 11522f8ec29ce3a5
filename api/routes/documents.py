"""Documents: upload (JSON text or a file), status, list, delete; and search over them."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import func, select

from activities.adapters.search import invalidate_tenant
from activities.contracts.ingest import IngestResult
from activities.logic.input_guard import unstorable
from activities.logic.parsing import DocumentRejected, mime_type_of
from api.core.deps import ResourcesDep
from api.core.errors import error_responses
from api.core.tenancy import TenantDep
from api.core.text_fields import StorableStr
from api.services.document_intake import Upload, document_view, rejected, take_in
from db.documents import tombstone_document
from db.engine import scope_to_tenant
from db.models import Document
from infra.runtime.resources import Resources

router = APIRouter(tags=["documents"])
# Apps search with chat keys as well as ingest ones: its own router, its own scopes (api/main.py).
search_router = APIRouter(tags=["search"])

# How long a small upload's request waits for its ingestion before answering 202 instead.
SYNC_WAIT = timedelta(seconds=60)


TITLE_MAX = 1000  # documents.title is a VARCHAR(1000)


class DocumentCreate(BaseModel):
    text: StorableStr = Field(min_length=1, description="the document's content")
    source: StorableStr | None = Field(
        default=None, max_length=1000, description="where it comes from; one document per source"
    )
    title: StorableStr | None = Field(default=None, max_length=TITLE_MAX)
    mime_type: Literal["text/plain", "text/markdown", "text/html"] = "text/plain"


class SearchRequest(BaseModel):
    query: StorableStr = Field(min_length=1, max_length=4000)
    k: int = Field(default=5, ge=1, le=100)
    mode: Literal["hybrid", "vector", "text"] = "hybrid"


async def _upload_from(request: Request) -> Upload:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form()
        file = form.get("file")
        if file is None or isinstance(file, str):
            raise HTTPException(422, "multipart uploads need a `file` field")
        content = await file.read()
        try:
            mime = mime_type_of(file.filename, file.content_type)
        except DocumentRejected as exc:
            raise rejected(exc) from exc
        source = str(form.get("source") or file.filename or f"upload-{uuid.uuid4()}")
        title = form.get("title")
        for name, value in (("source", source), ("title", title)):
            if isinstance(value, str) and (why := unstorable(value)):
                raise HTTPException(422, f"the {name} {why}")
        if isinstance(title, str) and len(title) > TITLE_MAX:  # as the JSON body's limit
            raise HTTPException(422, f"the title has {len(title)} characters; the limit is {TITLE_MAX}")
        return Upload(content, mime, source[:1000], str(title) if title else None)
    if kind in ("application/json", ""):
        try:
            body = DocumentCreate.model_validate_json(await request.body())
        except ValidationError as exc:  # answered like any other invalid body (api/core/errors.py)
            raise RequestValidationError(exc.errors()) from exc
        source = body.source or f"text-{uuid.uuid4()}"
        return Upload(body.text.encode(), body.mime_type, source, body.title)
    raise HTTPException(415, f"send JSON or multipart/form-data, not {kind}")


# The body is read by hand (JSON or multipart), so its schema is declared here for the OpenAPI document.
_UPLOAD_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": DocumentCreate.model_json_schema()},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "source": {"type": "string", "maxLength": 1000},
                    "title": {"type": "string", "maxLength": 1000},
                },
            }
        },
    },
}


@router.post(
    "/v1/documents",
    response_model=None,
    status_code=201,
    openapi_extra={"requestBody": _UPLOAD_BODY},
    responses={
        200: {"description": "The same bytes were already ingested: nothing changed (`unchanged: true`)"},
        202: {"description": "Accepted: ingestion goes on; poll `Location`"},
        **error_responses(400, 415),
    },
)
async def create_document(
    request: Request, res: ResourcesDep, tenant: TenantDep, wait: bool = True
) -> JSONResponse:
    """Ingest a document: JSON `{"text", "source", "title", "mime_type"}` or a multipart `file`
    (.txt, .md, .html, .pdf). The same bytes again change nothing (200). Small documents answer
    when searchable (201); large ones, or `?wait=false`, answer 202 at once: poll `GET /v1/documents/{id}`."""
    upload = await _upload_from(request)
    intake = await take_in(res, tenant, upload)
    doc = intake.document
    if not intake.started:
        return JSONResponse({**document_view(doc), "unchanged": True}, status_code=200)
    location = {"Location": f"/v1/documents/{doc.id}"}
    if wait and len(upload.content) <= res.settings.sync_ingest_bytes:
        handle = res.temporal.get_workflow_handle(doc.workflow_id or "", result_type=IngestResult)
        try:
            result = await asyncio.wait_for(handle.result(), SYNC_WAIT.total_seconds())
        except TimeoutError:
            pass
        else:
            view = await _view(res, tenant, doc.id)
            if result.status == "failed" and result.error:
                return JSONResponse(
                    {"error": {**result.error, "type": "invalid_request_error", "document": view}},
                    status_code=422,
                )
            return JSONResponse(view, status_code=201, headers=location)
    return JSONResponse(await _view(res, tenant, doc.id), status_code=202, headers=location)


async def _view(res: Resources, tenant: uuid.UUID, document_id: uuid.UUID) -> dict[str, Any]:
    async with res.sessions.begin() as session:
        await scope_to_tenant(session, tenant)
        doc = await session.get(Document, document_id)
    if doc is None or doc.tenant_id != tenant:
        raise HTTPException(404, f"document {document_id} not found")
    return document_view(doc)


@router.get("/v1/documents/{document_id}", responses=error_responses(404))
async def get_document(document_id: uuid.UUID, res: ResourcesDep, tenant: TenantDep) -> dict[str, Any]:
    """Status and counts: `status` is pending, ingesting, ready, failed or deleted;
    `embedded_count` of `chunk_count` shows progress."""
    return await _view(res, tenant, document_id)


@router.get("/v1/documents")
async def list_documents(
    res: ResourcesDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
    include_deleted: bool = False,
) -> dict[str, Any]:
    async with res.sessions.begin() as session:
        await scope_to_tenant(session, tenant)
        where = [Document.tenant_id == tenant]
        if not include_deleted:
            where.append(Document.deleted_at.is_(None))
        total = await session.scalar(select(func.count()).select_from(Document).where(*where))
        docs = (
            await session.scalars(
                select(Document)
                .where(*where)
                .order_by(Document.created_at.desc())
                .limit(limit)
                .offset(offset)
            )
        ).all()
    return {"data": [document_view(d) for d in docs], "total": total, "limit": limit, "offset": offset}


@router.delete("/v1/documents/{document_id}", responses=error_responses(404))
async def delete_document(document_id: uuid.UUID, res: ResourcesDep, tenant: TenantDep) -> dict[str, Any]:
    """Tombstone the document: its chunks never come back from a query; a purge removes them later."""
    async with res.sessions.begin() as session:
        await scope_to_tenant(session, tenant)
        doc = await session.get(Document, document_id, with_for_update=True)
        if doc is None or doc.tenant_id != tenant or doc.deleted_at is not None:
            raise HTTPException(404, f"document {document_id} not found")
        await tombstone_document(session, doc)
    await invalidate_tenant(res.redis, tenant)
    return await _view(res, tenant, document_id)


@search_router.post("/v1/search", responses=error_responses(400))
async def search(body: SearchRequest, res: ResourcesDep, tenant: TenantDep) -> dict[str, Any]:
    """The tenant's top-k chunks for a query, as the chat turn's retrieve step sees them."""
    found = await res.search.search(tenant, body.query, body.k, body.mode)
    return {
        "data": [c.model_dump() for c in found.chunks],
        "embedding_model": found.embedding_model,
        "embedding_version": found.embedding_version,
        "cached": found.cached,
    }
