"""`turnflow models` and `turnflow usage`: the registry with live breaker states, canary shares and
each version's own figures; promote or roll back a canary at runtime; usage and cost per tenant."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime, timedelta

from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from activities.chat.route_turn import SHARES_KEY, runtime_shares
from db.models import AuditEvent, Tenant
from db.usage import UsageRow, model_health, usage_report
from infra.runtime.resources import Resources


async def show_models(res: Resources, console: Console) -> None:
    registry = res.registry
    views = await res.breakers.views(registry.endpoints())
    shares = await runtime_shares(res.redis)
    async with res.sessions() as session:
        health = {
            (h.model, h.model_version): h
            for h in await model_health(session, datetime.now(UTC) - timedelta(days=1))
        }
    table = Table(title="models (temporal.yaml; shares as changed at runtime; figures of the last 24 h)")
    for column in (
        "model",
        "version",
        "tier",
        "fidelity",
        "endpoints (breaker)",
        "share",
        "$/1k in/out",
        "residency",
        "replies",
        "errors",
        "TTFT p50/p95 ms",
    ):
        table.add_column(column)
    for name, spec in registry.models.items():
        endpoints = "\n".join(f"{url} ({views[url].state})" for url in spec.endpoints)
        share = ""
        if spec.canary_of:
            share = f"{shares.get(name, spec.share):.0%} of {spec.canary_of}"
        h = health.get((name, spec.version))
        ttft = f"{h.ttft_p50_ms or 0:.0f}/{h.ttft_p95_ms or 0:.0f}" if h and h.ttft_p50_ms is not None else ""
        table.add_row(
            name,
            spec.version,
            spec.tier,
            str(spec.fidelity),
            endpoints,
            share,
            f"{spec.cost.input_per_1k}/{spec.cost.output_per_1k}",
            ", ".join(spec.residency),
            str(h.replies if h else 0),
            str(h.errors if h else 0),
            ttft,
        )
    console.print(table)


async def set_share(res: Resources, name: str, share: float, action: str) -> str:
    """Change a canary's share for every worker at once (they read it on each turn); audited."""
    spec = res.registry.models.get(name)
    if spec is None:
        raise LookupError(f"no model named {name!r} in {res.settings.policy_file}")
    if spec.canary_of is None:
        raise LookupError(f"{name} is not a canary (it has no canary_of); only canaries have shares")
    before = (await runtime_shares(res.redis)).get(name, spec.share)
    await res.redis.hset(SHARES_KEY, name, str(share))
    async with res.sessions.begin() as session:
        session.add(
            AuditEvent(
                actor=f"cli:{getpass.getuser()}",
                action=f"models.{action}",
                object_type="model",
                object_id=f"{name}@{spec.version}",
                details={"share_before": before, "share_after": share, "base": spec.canary_of},
            )
        )
    return f"{name}@{spec.version}: {before:.0%} → {share:.0%} of {spec.canary_of}'s conversations"


async def usage_rows(res: Resources, tenant: str | None, since: datetime, until: datetime) -> list[UsageRow]:
    async with res.sessions() as session:
        tenant_id = None
        if tenant:
            tenant_id = await session.scalar(select(Tenant.id).where(Tenant.name == tenant))
            if tenant_id is None:
                raise LookupError(f"no tenant named {tenant!r}")
        return await usage_report(session, since, until, tenant_id)


def usage_table(rows: list[UsageRow], since: datetime, until: datetime) -> Table:
    table = Table(title=f"usage {since:%Y-%m-%d %H:%M} → {until:%Y-%m-%d %H:%M} UTC")
    for column in (
        "tenant",
        "model",
        "version",
        "replies",
        "errors",
        "input tokens",
        "output tokens",
        "cost $",
        "$ per 1k replies",
    ):
        table.add_column(column, justify="right" if column not in ("tenant", "model", "version") else "left")
    for r in rows:
        table.add_row(
            r.tenant,
            r.model,
            r.model_version,
            str(r.messages),
            str(r.errors),
            str(r.input_tokens),
            str(r.output_tokens),
            f"{r.cost_usd:.6f}",
            f"{r.cost_per_1k_messages:.6f}",
        )
    return table
