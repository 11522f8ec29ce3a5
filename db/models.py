"""SQLAlchemy 2 models: tenants, keys, transcripts with provenance, documents, chunks, audit."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from pgvector.sqlalchemy import SPARSEVEC, Vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# all-MiniLM-L6-v2, the embedded default embedder.
EMBEDDING_DIM = 384
# sparsevec's largest dimension, into which BM25's lexemes hash (bm25_term_id, migration 0009).
LEXICON_DIM = 1_000_000_000


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSONB, list[str]: ARRAY(Text)}


def _pk() -> Mapped[uuid.UUID]:
    return mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


def _tenant_fk() -> Mapped[uuid.UUID]:
    return mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True, nullable=False)


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = _pk()
    name: Mapped[str] = mapped_column(String(200), unique=True)
    residency_tags: Mapped[list[str]] = mapped_column(default=list, server_default="{}")
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    # The embedding model and version the tenant's queries use (None: the deployment's embedder).
    # Re-embedding writes vectors for a new version beside these and switches them in one update.
    embedding_model: Mapped[str | None] = mapped_column(String(200))
    embedding_version: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = _created()


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = _pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    name: Mapped[str] = mapped_column(String(200))
    # The public prefix finds the row; only a hash of the secret is stored.
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[list[str]] = mapped_column(default=list, server_default="{}")
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created()


class Conversation(Base):
    __tablename__ = "conversations"
    # GET /v1/conversations pages through a tenant's newest first (migration 0011).
    __table_args__ = (Index("ix_conversations_tenant_created", "tenant_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = _pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    # Sealed (activities/adapters/sealed_text.py): longer than the 500 characters the API allows.
    title: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict, server_default="{}")
    # The app's own id for the person the conversation is with (erasure of one end user's data).
    end_user: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class Message(Base):
    """One transcript entry, with the provenance a compliance replay needs."""

    __tablename__ = "messages"
    # A retried persist of the same turn must never write a second row.
    __table_args__ = (
        UniqueConstraint("turn_id", "role", name="uq_messages_turn_role"),
        Index("ix_messages_conversation_created", "conversation_id", "created_at"),
        Index("ix_messages_tenant_created", "tenant_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = _pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
    )
    turn_id: Mapped[str] = mapped_column(String(300))
    role: Mapped[str] = mapped_column(String(20))
    content: Mapped[str] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(100))
    model_id: Mapped[str | None] = mapped_column(String(200))
    model_version: Mapped[str | None] = mapped_column(String(100))
    prompt_template_version: Mapped[str | None] = mapped_column(String(50))
    retrieved_chunks: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    ttft_ms: Mapped[float | None]
    latency_ms: Mapped[float | None]
    finish_reason: Mapped[str | None] = mapped_column(String(50))
    # How the model was chosen: the rule that fired, the chain, what was skipped, fallbacks taken.
    route: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # What the reply cost, from the serving model's prices (exact decimal: usage reports sum these).
    cost_usd: Mapped[Decimal | None] = mapped_column(Numeric(18, 10))
    interactive: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    # A failed turn's error as its client saw it: code, message, retryable (SLOs tell ours from theirs).
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    pii_redacted: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    redacted: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    redaction_reason: Mapped[str | None] = mapped_column(Text)
    # A reply's tool calls, or the calls a `tool` message answers (OpenAI's shape, migration 0012).
    # None is SQL NULL here (not JSON null): the prompt's history skips rows that have calls.
    tool_calls: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB(none_as_null=True))
    # A question's images by reference: a sealed link, or an inline image's type, size and SHA-256.
    attachments: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB(none_as_null=True))
    # Out-of-band moderation's record: moderator, version, categories, and for a redacted reply how
    # long and how many tokens it was shown before that (migration 0012).
    moderation: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    created_at: Mapped[datetime] = _created()


class Feedback(Base):
    """A user's verdict on a reply: one current one per message and API key (migration 0010). The
    reply's provenance (model, version, prompt template, route, chunks) is on its message row."""

    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("message_id", "key_id", name="uq_feedback_message_key"),
        Index("ix_feedback_tenant_updated", "tenant_id", "updated_at"),
    )

    id: Mapped[uuid.UUID] = _pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)
    message_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    key_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    score: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(String(20))
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class Document(Base):
    """A logical document (one per tenant and source); ``version`` grows when its bytes change."""

    __tablename__ = "documents"
    __table_args__ = (
        # One live document per source; deleted ones keep their rows (and audit trail) until purged.
        Index(
            "uq_documents_tenant_source",
            "tenant_id",
            "source",
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index("ix_documents_tenant_hash", "tenant_id", "content_hash"),
    )

    id: Mapped[uuid.UUID] = _pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    source: Mapped[str] = mapped_column(String(1000))
    title: Mapped[str | None] = mapped_column(String(1000))
    mime_type: Mapped[str] = mapped_column(String(100), default="text/plain")
    content_hash: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)
    # pending → ingesting → ready | failed; deleted once tombstoned.
    status: Mapped[str] = mapped_column(String(20), default="pending")
    size_bytes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    chunk_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    embedded_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    pii_counts: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    workflow_id: Mapped[str | None] = mapped_column(String(300))
    error: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict, server_default="{}")
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DocumentUpload(Base):
    """The bytes of an upload waiting for its ingestion workflow (kept out of Temporal's history);
    deleted once the document version they made is live."""

    __tablename__ = "document_uploads"

    id: Mapped[uuid.UUID] = _pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    document_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), index=True, nullable=False
    )
    document_version: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(1000))
    mime_type: Mapped[str] = mapped_column(String(100))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _created()


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (
        Index(
            "ix_chunks_embedding_hnsw",
            "embedding",
            postgresql_using="hnsw",
            postgresql_with={"m": 16, "ef_construction": 64},
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
        Index("ix_chunks_tsv", "tsv", postgresql_using="gin"),
        Index(
            "ix_chunks_bm25_hnsw",
            "bm25",
            postgresql_using="hnsw",
            postgresql_ops={"bm25": "sparsevec_ip_ops"},
        ),
        Index("ix_chunks_tenant_model", "tenant_id", "embedding_model", "embedding_version"),
        # One vector per chunk position and embedding version: a retried batch cannot duplicate.
        UniqueConstraint(
            "document_id",
            "document_version",
            "ordinal",
            "embedding_model",
            "embedding_version",
            name="uq_chunks_position_embedding",
        ),
    )

    id: Mapped[uuid.UUID] = _pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    document_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), index=True, nullable=False
    )
    document_version: Mapped[int] = mapped_column(Integer)
    ordinal: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    token_count: Mapped[int] = mapped_column(Integer)
    embedding: Mapped[list[float] | None] = mapped_column(Vector(EMBEDDING_DIM))
    embedding_model: Mapped[str | None] = mapped_column(String(200))
    embedding_version: Mapped[str | None] = mapped_column(String(100))
    # Sealed with the tenant's key (activities/adapters/sealed_text.py), so the writer computes the
    # tsvector from the clear text (db.documents.insert_chunks; migration 0008).
    tsv: Mapped[str] = mapped_column(TSVECTOR)
    # BM25's document side over the tsvector's lexemes (db/lexicon.py; migration 0009).
    bm25: Mapped[Any] = mapped_column(SPARSEVEC(LEXICON_DIM), nullable=True)
    chunker: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    # Queries see only live chunks: a new document version's chunks go live, and the old ones are
    # tombstoned, in one transaction, so no query ever sees a mix of versions.
    live: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    tombstoned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created()


class AuditEvent(Base):
    """Who did what, when. Append-only for the application role."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_tenant_at", "tenant_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tenants.id", ondelete="SET NULL"))
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    object_type: Mapped[str | None] = mapped_column(String(100))
    object_id: Mapped[str | None] = mapped_column(String(300))
    request_id: Mapped[str | None] = mapped_column(String(100))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    # The hash chain (migration 0005): set by the database's trigger on insert, never by the application.
    chain: Mapped[str | None] = mapped_column(String(64))
    seq: Mapped[int | None] = mapped_column(BigInteger)
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    row_hash: Mapped[str | None] = mapped_column(String(64))


class TraceSpan(Base):
    """Recent spans of every process (infra/telemetry/span_store.py), for `turnflow trace` without
    a collector."""

    __tablename__ = "trace_spans"
    __table_args__ = (
        Index("ix_trace_spans_trace", "trace_id"),
        Index("ix_trace_spans_turn", "turn_id"),
        Index("ix_trace_spans_start", "start_time"),
    )

    trace_id: Mapped[str] = mapped_column(String(32))
    span_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    parent_span_id: Mapped[str | None] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(500))
    kind: Mapped[str] = mapped_column(String(20))
    service: Mapped[str] = mapped_column(String(100))
    start_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[float]
    status: Mapped[str] = mapped_column(String(10))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    events: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    turn_id: Mapped[str | None] = mapped_column(String(300))


class RetrievalObservation(Base):
    """What one turn's retrieval saw (scores, the query's embedding): the raw material of drift signals."""

    __tablename__ = "retrieval_observations"
    __table_args__ = (Index("ix_retrieval_observations_tenant_at", "tenant_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    results: Mapped[int] = mapped_column(Integer)
    top_score: Mapped[float | None]
    mean_score: Mapped[float | None]
    embedding_version: Mapped[str | None] = mapped_column(String(100))
    query_embedding: Mapped[list[float] | None] = mapped_column(Vector(EMBEDDING_DIM))


class TenantKey(Base):
    """A tenant's payload data key, stored only wrapped by a key-encryption key (migration 0007)."""

    __tablename__ = "tenant_keys"

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    # None once destroyed (crypto-shredding): what it encrypted can never be read again.
    wrapped: Mapped[bytes | None] = mapped_column(LargeBinary)
    kek_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = _created()
    destroyed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
