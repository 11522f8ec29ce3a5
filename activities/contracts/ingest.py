"""The ingestion workflow's data. Only ids and counts travel through Temporal: document text stays in
Postgres (the upload row, then the chunks), so history never holds a document or its PII."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from infra.config.policy import WorkflowOptions

DocumentStatus = Literal["pending", "ingesting", "ready", "failed", "deleted", "superseded"]


class ChunkerOptions(BaseModel):
    max_tokens: int = 200
    overlap_tokens: int = 40


class IngestInput(BaseModel):
    options: WorkflowOptions
    tenant_id: str
    document_id: str
    version: int
    upload_id: str
    chunker: ChunkerOptions = Field(default_factory=ChunkerOptions)
    batch_size: int = 64


class DocumentRef(BaseModel):
    tenant_id: str
    document_id: str
    version: int


class Prepared(BaseModel):
    chunk_count: int
    embedding_model: str
    embedding_version: str
    pii_counts: dict[str, int] = Field(default_factory=dict)


class EmbedInput(BaseModel):
    tenant_id: str
    document_id: str
    version: int
    embedding_model: str
    embedding_version: str
    batch_size: int = 64


class FailInput(BaseModel):
    document: DocumentRef
    code: str
    message: str


class IngestResult(BaseModel):
    document_id: str
    version: int
    status: DocumentStatus
    chunk_count: int = 0
    error: dict[str, str] | None = None
    # Set when the tenant switched embedding versions during this ingestion: the chunks were
    # relabelled to it and must be embedded again before they can go live.
    embed_again_with: tuple[str, str] | None = None
