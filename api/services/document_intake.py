"""Take an upload in: check it at the door, find whether these bytes are already in, and start the
ingestion workflow for a new document or a new version of one (same tenant and source)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from temporalio.common import WorkflowIDConflictPolicy

from activities.contracts.ingest import ChunkerOptions, IngestInput
from activities.logic.parsing import DocumentRejected, check_pdf
from db.engine import scope_to_tenant
from db.models import Document, DocumentUpload
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
    async with res.sessions.begin() as session:
        await scope_to_tenant(session, tenant)
        # Lock the source's row (if any): two uploads of one source must not both make version n+1.
        doc = await session.scalar(
            select(Document)
            .where(
                Document.tenant_id == tenant, Document.source == upload.source, Document.deleted_at.is_(None)
            )
            .with_for_update()
        )
        same_bytes = await session.scalar(
            select(Document).where(
                Document.tenant_id == tenant,
                Document.content_hash == digest,
                Document.deleted_at.is_(None),
                Document.status.in_(("pending", "ingesting", "ready")),
            )
        )
        if same_bytes is not None and (doc is None or doc.id == same_bytes.id):
            # The same bytes again: nothing changes. If their ingestion never got going (the start
            # failed after the row was written), start it now; a running one is joined, not doubled.
            pending = await session.scalar(
                select(DocumentUpload.id).where(
                    DocumentUpload.document_id == same_bytes.id,
                    DocumentUpload.document_version == same_bytes.version,
                )
            )
            if pending is not None and same_bytes.status in ("pending", "ingesting"):
                await _start(res, tenant, same_bytes, pending)
            return Intake(same_bytes, started=False)
        if doc is None:
            doc = Document(id=uuid.uuid4(), tenant_id=tenant, source=upload.source, version=1)
            session.add(doc)
        else:
            doc.version += 1
        doc.title = upload.title or doc.title
        doc.mime_type = upload.mime_type
        doc.content_hash = digest
        doc.size_bytes = len(upload.content)
        doc.status, doc.error, doc.chunk_count, doc.embedded_count = "pending", None, 0, 0
        doc.workflow_id = ingest_workflow_id(str(doc.id), doc.version)
        await session.flush()
        upload_row = DocumentUpload(
            id=uuid.uuid4(),
            tenant_id=tenant,
            document_id=doc.id,
            document_version=doc.version,
            filename=upload.source,
            mime_type=upload.mime_type,
            content=upload.content,
        )
        session.add(upload_row)
    await _start(res, tenant, doc, upload_row.id)
    return Intake(doc, started=True)


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
