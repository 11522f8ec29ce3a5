"""The re-embedding workflow's data: ids, versions and counts only."""

from __future__ import annotations

from pydantic import BaseModel, Field

from infra.config.policy import WorkflowOptions


class Target(BaseModel):
    model: str
    version: str


class Plan(BaseModel):
    target: Target
    tenant_ids: list[str]


class BatchInput(BaseModel):
    tenant_id: str
    target: Target
    batch_size: int


class CanaryInput(BaseModel):
    tenant_id: str
    target: Target
    queries: int


class CanaryResult(BaseModel):
    queries: int
    recall_new: float
    recall_current: float
    # The version the tenant searches with now (kept if the canary fails).
    current: Target | None = None


class TenantStep(BaseModel):
    tenant_id: str
    target: Target


class TenantReport(BaseModel):
    tenant_id: str
    status: str  # switched, kept (canary failed), already (nothing to do)
    embedded: int = 0
    canary: CanaryResult | None = None
    dropped: int = 0


class ReembedResult(BaseModel):
    target: Target
    tenants: list[TenantReport]


class ReembedInput(BaseModel):
    options: WorkflowOptions
    # The embedder to move to; empty means this deployment's default (what the schedule does).
    target_model: str | None = None
    target_version: str | None = None
    # Tenant ids to move; empty means every tenant not on the target yet.
    tenant_ids: list[str] | None = None
    batch_size: int = 64
    canary_queries: int = 20
    # The new version must find a canary chunk's own text in its top 10 at least this often...
    min_canary_recall: float = 0.8
    # ...and lose no more than this against the current version.
    max_canary_drop: float = 0.1
    # Carried over continue-as-new: tenants finished so far, and chunks embedded.
    done: list[TenantReport] = Field(default_factory=list)
