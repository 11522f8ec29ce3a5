"""Take an upload in: check it at the door, find whether these bytes are already in, and start the
ingestion workflow for a new document or a new version of one (same tenant and source)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from sqlalchemy.exc import IntegrityError
from temporalio.common import WorkflowIDConflictPolicy

from activities.contracts.ingest import ChunkerOptions, IngestInput
from activities.logic.parsing import DocumentRejected, check_pdf
from db.documents import record_upload
from db.engine import scope_to_tenant
from db.models import Document
from infra.runtime.resources import Resources
from workflows.ingest_document import ingest_workflow_id


@dataclass(frozen=True)
class Upload:
    content: bytes
    mime_type: str
    source: str
    title: str | None = None


@dataclass(frozen=True)
class Intake:
    document: Document
    # False when these bytes were already in: nothing new was started.
    started: bool


def rejected(exc: DocumentRejected) -> HTTPException:
    return HTTPException(exc.status, str(exc))


def check_upload(upload: Upload, max_bytes: int) -> None:
    if not upload.content.strip():
        raise HTTPException(422, "the document is empty")
    if len(upload.content) > max_bytes:
        raise HTTPException(413, f"the document is {len(upload.content)} bytes; the limit is {max_bytes}")


async def take_in(res: Resources, tenant: uuid.UUID, upload: Upload) -> Intake:
    check_upload(upload, res.settings.max_document_bytes)
    if upload.mime_type == "application/pdf":
        try:
            await asyncio.to_thread(check_pdf, upload.content)
        except DocumentRejected as exc:
            raise rejected(exc) from exc
    digest = hashlib.sha256(upload.content).hexdigest()
    try:
        return await _record(res, tenant, upload, digest)
    except IntegrityError:
        # Another request created this source's document a moment ago: take it as the prior version.
        return await _record(res, tenant, upload, digest)


async def _record(res: Resources, tenant: uuid.UUID, upload: Upload, digest: str) -> Intake:
    """The source's next version, or the same bytes again: then nothing changes, and an ingestion
    that never got going (its start failed after the row was written) starts now; a running one is
    joined, not doubled (the workflow id is the version's). The bytes are stored sealed with the
    tenant's key (the digest, of the clear bytes, only finds a repeat)."""
    sealed = await res.sealer.seal_bytes(tenant, upload.content)
    async with res.sessions.begin() as session:
        await scope_to_tenant(session, tenant)
        recorded = await record_upload(
            session,
            tenant,
            source=upload.source,
            title=upload.title,
            mime_type=upload.mime_type,
            content=sealed,
            digest=digest,
            workflow_id_for=ingest_workflow_id,
        )
    if recorded.upload_id is not None:
        await _start(res, tenant, recorded.document, recorded.upload_id)
    return Intake(recorded.document, started=recorded.new_version)


async def _start(res: Resources, tenant: uuid.UUID, doc: Document, upload_id: uuid.UUID) -> None:
    s = res.settings
    options = res.policy.options_for("ingest_document")
    await res.temporal.start_workflow(
        "ingest_document",
        IngestInput(
            options=options,
            tenant_id=str(tenant),
            document_id=str(doc.id),
            version=doc.version,
            upload_id=str(upload_id),
            chunker=ChunkerOptions(max_tokens=s.chunk_tokens, overlap_tokens=s.chunk_overlap_tokens),
            batch_size=s.embed_batch_size,
        ),
        id=doc.workflow_id or "",
        task_queue=res.policy.queue(res.policy.workflows["ingest_document"].task_queue),
        execution_timeout=options.execution_timeout,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


def document_view(doc: Document) -> dict[str, Any]:
    return {
        "id": str(doc.id),
        "source": doc.source,
        "title": doc.title,
        "mime_type": doc.mime_type,
        "version": doc.version,
        "status": doc.status,
        "content_hash": doc.content_hash,
        "size_bytes": doc.size_bytes,
        "chunk_count": doc.chunk_count,
        "embedded_count": doc.embedded_count,
        "pii_redacted": dict(doc.pii_counts or {}),
        "error": doc.error,
        "workflow_id": doc.workflow_id,
        "created_at": doc.created_at.isoformat() if doc.created_at else None,
        "updated_at": doc.updated_at.isoformat() if doc.updated_at else None,
        "deleted_at": doc.deleted_at.isoformat() if doc.deleted_at else None,
    }
