"""`turnflow tenants` and `turnflow keys`, and the demo key `turnflow up` prints."""

from __future__ import annotations

import getpass
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from rich.table import Table
from sqlalchemy import func, select

from db.access import create_key, ensure_tenant, prefix_of, revoke_key
from db.models import ApiKey, AuditEvent, Tenant
from infra.config.residency import describe_gaps, residency_gaps
from infra.runtime.resources import Resources


class ResidencyViolation(ValueError):
    """A tenant whose residency the deployment's stores cannot meet."""


async def tenant_id(res: Resources, name: str) -> uuid.UUID:
    async with res.sessions() as session:
        found = await session.scalar(select(Tenant.id).where(Tenant.name == name))
    if found is None:
        raise LookupError(f"no tenant named {name!r} (turnflow tenants create {name})")
    return found


async def create_tenant(
    res: Resources,
    name: str,
    residency: list[str],
    cost_ceiling: Decimal | None,
    daily_token_budget: int | None,
    requests_per_min: int | None = None,
    tokens_per_min: int | None = None,
    retention_days: int | None = None,
    pii: dict[str, str] | None = None,
) -> str:
    tags = sorted(set(residency))
    if gaps := residency_gaps(tags, res.policy.stores):
        # Refused before anything is written: the tenant's data could not live here.
        async with res.sessions.begin() as session:
            session.add(
                AuditEvent(
                    actor=f"cli:{getpass.getuser()}",
                    action="tenants.create",
                    object_type="tenant",
                    object_id=name,
                    details={"refused": "residency_violation", "residency": tags, "stores": gaps},
                )
            )
        raise ResidencyViolation(
            f"tenant {name} not created: residency {', '.join(tags)}, but {describe_gaps(gaps)} "
            f"(stores: in {res.settings.policy_file})"
        )
    created = await ensure_tenant(res.sessions, name)
    policy: dict[str, object] = {}
    if cost_ceiling is not None:
        policy["cost_ceiling_per_1k_tokens"] = str(cost_ceiling)
    if daily_token_budget is not None:
        policy["daily_token_budget"] = daily_token_budget
    if requests_per_min is not None:
        policy["requests_per_min"] = requests_per_min
    if tokens_per_min is not None:
        policy["tokens_per_min"] = tokens_per_min
    if retention_days is not None:
        policy["retention_days"] = retention_days
    if pii:
        policy["pii"] = pii
    async with res.sessions.begin() as session:
        tenant = await session.get_one(Tenant, created)
        if residency:
            tenant.residency_tags = tags
        tenant.settings = {**tenant.settings, **policy}
    return f"tenant {name} ({created}): residency {residency or 'any'}, policy {policy or 'defaults'}"


async def tenants_table(res: Resources) -> Table:
    async with res.sessions() as session:
        keys = func.count(ApiKey.id).filter(ApiKey.revoked_at.is_(None))
        rows = (
            await session.execute(
                select(Tenant, keys)
                .outerjoin(ApiKey, ApiKey.tenant_id == Tenant.id)
                .group_by(Tenant.id)
                .order_by(Tenant.name)
            )
        ).all()
    table = Table(title=f"{len(rows)} tenants")
    for column in ("name", "id", "residency", "settings", "live keys", "created"):
        table.add_column(column)
    for tenant, live in rows:
        table.add_row(
            tenant.name,
            str(tenant.id),
            ", ".join(tenant.residency_tags) or "any",
            ", ".join(f"{k}={v}" for k, v in tenant.settings.items()),
            str(live),
            f"{tenant.created_at:%Y-%m-%d %H:%M}",
        )
    return table


async def new_key(
    res: Resources, tenant: str, name: str, scopes: list[str], expires_in_days: int | None
) -> str:
    expires = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    key, row = await create_key(res.sessions, await tenant_id(res, tenant), name, scopes, expires)
    until = f"until {expires:%Y-%m-%d}" if expires else "no expiry"
    return f"{key}\n(tenant {tenant}, scopes {', '.join(row.scopes)}, {until}; shown once, stored hashed)"


async def revoke(res: Resources, key_or_prefix: str) -> str:
    prefix = prefix_of(key_or_prefix) or key_or_prefix
    if not await revoke_key(res.sessions, prefix):
        raise LookupError(f"no live key with prefix {prefix!r}")
    return f"revoked key {prefix}"


async def keys_table(res: Resources, tenant: str) -> Table:
    async with res.sessions() as session:
        rows = (
            await session.scalars(
                select(ApiKey)
                .where(ApiKey.tenant_id == await tenant_id(res, tenant))
                .order_by(ApiKey.created_at)
            )
        ).all()
    table = Table(title=f"keys of {tenant}")
    for column in ("prefix", "name", "scopes", "expires", "revoked", "created", "last used"):
        table.add_column(column)
    for k in rows:
        table.add_row(
            k.prefix,
            k.name,
            ", ".join(k.scopes),
            f"{k.expires_at:%Y-%m-%d}" if k.expires_at else "",
            f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "",
            f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "never",
        )
    return table
