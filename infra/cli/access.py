"""`turnflow tenants` and `turnflow keys`, and the demo key `turnflow up` prints."""

from __future__ import annotations

import getpass
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import func, select

from activities.adapters.outages import REDIS_UNAVAILABLE
from api.core.principals import TTL_S, announce_revoked
from db.access import create_key, ensure_tenant, prefix_of, revoke_key
from db.models import ApiKey, AuditEvent, Tenant
from infra.cli.common import console, with_resources
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
    webhook_hosts: list[str] | None = None,
    response_cache: str | None = None,
    degraded_answers: bool | None = None,
    answer_when_shed: bool | None = None,
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
    if webhook_hosts:
        policy["webhook_hosts"] = sorted(set(webhook_hosts))
    if response_cache is not None:
        policy["response_cache"] = response_cache
    if degraded_answers is not None:
        policy["degraded_answers"] = degraded_answers
    if answer_when_shed is not None:
        policy["answer_when_shed"] = answer_when_shed
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
    try:
        await announce_revoked(res.redis, prefix)
    except REDIS_UNAVAILABLE:  # API processes still drop it from their caches within TTL_S
        return f"revoked key {prefix} (API processes stop accepting it within {TTL_S:g} s)"
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


tenants_app = typer.Typer(help="Tenants and their policies.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (stored hashed; shown once).", no_args_is_help=True)


class ResponseCacheMode(StrEnum):
    auto = "auto"
    exact = "exact"
    off = "off"


@tenants_app.command("create")
def tenants_create(
    name: Annotated[str, typer.Argument(help="a unique name")],
    residency: Annotated[
        list[str] | None,
        typer.Option(help="a residency tag its models and stores must carry (repeatable), e.g. on-prem"),
    ] = None,
    cost_ceiling: Annotated[
        Decimal | None, typer.Option(help="US dollars per 1k output tokens a model may cost at most")
    ] = None,
    daily_token_budget: Annotated[
        int | None, typer.Option(min=1, help="input + output tokens per UTC day")
    ] = None,
    requests_per_min: Annotated[
        int | None, typer.Option(min=1, help="its rate limit (default: settings)")
    ] = None,
    tokens_per_min: Annotated[int | None, typer.Option(min=1, help="its token rate limit")] = None,
    retention_days: Annotated[int | None, typer.Option(min=1, help="days its transcripts are kept")] = None,
    pii: Annotated[
        list[str] | None,
        typer.Option(
            help="KIND=redact|mask|allow for EMAIL, IBAN, CARD, SSN, NATIONAL_ID, IP, PHONE (repeatable)"
        ),
    ] = None,
    webhook_host: Annotated[
        list[str] | None,
        typer.Option(help="a host its webhooks may reach, `*.example.com` for subdomains (repeatable)"),
    ] = None,
    response_cache: Annotated[
        ResponseCacheMode | None,
        typer.Option(
            help="auto: cache repeatable (temperature 0) replies; exact: any whose key repeats; off"
        ),
    ] = None,
    degraded_answers: Annotated[
        bool | None,
        typer.Option(
            "--degraded-answers/--no-degraded-answers",
            help="answer from its documents when no model can (default: yes)",
        ),
    ] = None,
    answer_when_shed: Annotated[
        bool | None,
        typer.Option(
            "--answer-when-shed/--no-answer-when-shed",
            help="at capacity, answer from its documents instead of a 503 (default: no)",
        ),
    ] = None,
) -> None:
    """Create a tenant (or update its policy when it exists)."""
    from activities.logic.pii import check_policy

    try:
        pii_policy = check_policy(dict(item.split("=", 1) for item in pii or [] if "=" in item))
        done = with_resources(
            lambda res: create_tenant(
                res,
                name,
                residency or [],
                cost_ceiling,
                daily_token_budget,
                requests_per_min,
                tokens_per_min,
                retention_days,
                pii_policy,
                webhook_host,
                response_cache.value if response_cache else None,
                degraded_answers,
                answer_when_shed,
            )
        )
    except (ValueError, ResidencyViolation) as exc:
        console.print(f"[red]✗ {exc}[/]")
        raise typer.Exit(2) from exc
    console.print(done)


@tenants_app.command("list")
def tenants_list() -> None:
    """Every tenant: residency, policy settings and live keys."""

    console.print(with_resources(tenants_table))


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="the tenant, by name")],
    scope: Annotated[
        list[str] | None,
        typer.Option(
            help="chat, ingest, admin (all of its tenant) or operator (platform-wide SLOs, drift, "
            "dashboard); repeatable; default chat"
        ),
    ] = None,
    name: Annotated[str, typer.Option(help="what the key is for")] = "cli",
    expires_in_days: Annotated[int | None, typer.Option(min=1, help="default: never")] = None,
) -> None:
    """Create an API key and print it (once: only its hash is stored)."""

    try:
        console.print(
            with_resources(lambda res: new_key(res, tenant, name, scope or ["chat"], expires_in_days)),
            soft_wrap=True,
        )
    except ValueError as exc:
        console.print(f"[red]✗ {exc}[/]")
        raise typer.Exit(2) from exc


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="the key, or its prefix")]) -> None:
    """Revoke a key: the next request with it answers 401."""

    console.print(with_resources(lambda res: revoke(res, key)))


@keys_app.command("list")
def keys_list(tenant: Annotated[str, typer.Option(help="the tenant, by name")]) -> None:
    """A tenant's keys (prefixes, never secrets)."""

    console.print(with_resources(lambda res: keys_table(res, tenant)))
