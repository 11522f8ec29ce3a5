"""The maintenance workflows' data: purge of tombstones and transcript retention (ids and counts only)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from infra.config.policy import WorkflowOptions


class PurgeInput(BaseModel):
    options: WorkflowOptions
    # Tombstones younger than this stay (a mistaken delete can still be looked into).
    older_than_s: int = 7 * 24 * 3600
    dry_run: bool = False


class PurgeReport(BaseModel):
    tenants: int = 0
    chunks: int = 0
    documents: int = 0
    dry_run: bool = False


class RetentionInput(BaseModel):
    options: WorkflowOptions
    dry_run: bool = False


class TenantRetention(BaseModel):
    tenant: str
    retention_days: int
    cutoff: datetime
    messages: int = 0
    conversations: int = 0
    streams: int = 0


class RetentionReport(BaseModel):
    dry_run: bool = False
    tenants: list[TenantRetention] = Field(default_factory=list)
    kept_forever: list[str] = Field(default_factory=list)


class ErasureInput(BaseModel):
    """What to erase now: named conversations of a tenant, one end user's, or all of the tenant's."""

    options: WorkflowOptions
    tenant_id: str
    conversation_ids: list[str] | None = None
    end_user: str | None = None
    # Who asked (a key's prefix, or the operator at the CLI), for the audit trail.
    requested_by: str


class ErasureBatch(BaseModel):
    tenant_id: str
    conversation_ids: list[str]


class ErasureCounts(BaseModel):
    conversations: int = 0
    messages: int = 0
    turns: int = 0
    workflow_executions: int = 0
    redis_keys: int = 0
    trace_spans: int = 0

    def add(self, other: ErasureCounts) -> ErasureCounts:
        return ErasureCounts(**{k: getattr(self, k) + getattr(other, k) for k in type(self).model_fields})


class ErasureRecord(BaseModel):
    request: ErasureInput
    counts: ErasureCounts
