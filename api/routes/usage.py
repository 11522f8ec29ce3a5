"""Tokens and cost per model over a time range, for the caller's tenant."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel
from sqlalchemy import select

from activities.contracts.route import Usd
from api.core.deps import ResourcesDep
from api.core.errors import error_responses
from api.core.tenancy import TenantDep
from api.core.text_fields import StorableStr
from db.models import Tenant
from db.usage import usage_report

router = APIRouter(tags=["usage"])


class ModelUsage(BaseModel):
    model: str
    model_version: str
    messages: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost_usd: Usd
    cost_per_1k_messages_usd: Usd


class UsageOut(BaseModel):
    tenant: str
    since: datetime
    until: datetime
    models: list[ModelUsage]
    messages: int
    input_tokens: int
    output_tokens: int
    cost_usd: Usd


@router.get("/v1/usage", responses=error_responses(404))
async def read_usage(
    res: ResourcesDep,
    tenant_id: TenantDep,
    tenant: Annotated[
        StorableStr | None, Query(max_length=200, description="tenant name (default: the caller's)")
    ] = None,
    since: Annotated[datetime | None, Query(description="ISO 8601; default: 30 days ago")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601, exclusive; default: now")] = None,
) -> UsageOut:
    """Replies, tokens and cost per model and version (summed from each reply's own record)."""
    until = _aware(until) if until else datetime.now(UTC)
    since = _aware(since) if since else until - timedelta(days=30)
    if since >= until:
        raise HTTPException(422, "since must be before until")
    async with res.sessions() as session:
        name = await session.scalar(select(Tenant.name).where(Tenant.id == tenant_id))
        if tenant is not None and tenant != name:
            # Another tenant's usage does not exist for this one.
            raise HTTPException(404, f"tenant {tenant!r} not found")
        rows = await usage_report(session, since, until, uuid.UUID(str(tenant_id)))
    models = [
        ModelUsage(
            **{k: v for k, v in asdict(r).items() if k != "tenant"},
            cost_per_1k_messages_usd=r.cost_per_1k_messages,
        )
        for r in rows
    ]
    return UsageOut(
        tenant=str(name),
        since=since,
        until=until,
        models=models,
        messages=sum(m.messages for m in models),
        input_tokens=sum(m.input_tokens for m in models),
        output_tokens=sum(m.output_tokens for m in models),
        cost_usd=sum((m.cost_usd for m in models), Decimal(0)),
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
