"""`turnflow models` and `turnflow usage`: the registry with live breaker states, canary shares and
each version's own figures; promote or roll back a canary at runtime; usage and cost per tenant."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from activities.adapters.canary_shares import change_share, runtime_shares
from db.usage import UsageRow, model_health, usage_report
from infra.cli.access import tenant_id
from infra.cli.common import console, with_resources
from infra.cli.rollout import rollout
from infra.config.canaries import declared_canaries
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
    """Change a canary's share (of a model or a prompt template) for every worker at once (they read
    it on each turn); audited."""
    canary = declared_canaries(res.policy.models, res.policy.prompts).get(name)
    if canary is None:
        if name in res.policy.models or name in res.policy.prompts:
            raise LookupError(f"{name} is not a canary (it has no canary_of); only canaries have shares")
        raise LookupError(f"no model or prompt template named {name!r} in {res.settings.policy_file}")
    before = await change_share(
        res.redis,
        res.sessions,
        kind=canary.kind,
        name=name,
        version=canary.version,
        base=canary.base,
        declared=canary.declared_share,
        share=share,
        actor=f"cli:{getpass.getuser()}",
        action=action,
    )
    return f"{name}@{canary.version}: {before:.0%} → {share:.0%} of {canary.base}'s conversations"


async def usage_rows(res: Resources, tenant: str | None, since: datetime, until: datetime) -> list[UsageRow]:
    only = await tenant_id(res, tenant) if tenant else None
    async with res.sessions() as session:
        return await usage_report(session, since, until, only)


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


app = typer.Typer()
models_app = typer.Typer(
    help="The model registry: state, canary promotion and rollback, canary rollouts.", no_args_is_help=True
)


@models_app.command("list")
def models_list() -> None:
    """Every model: version, tier, endpoints with their circuit state, canary share, prices, residency,
    and its replies, errors and first-token latency over the last 24 hours."""

    with_resources(lambda res: show_models(res, console))


@models_app.command("promote")
def models_promote(
    name: Annotated[str, typer.Argument(help="a canary (a model or prompt template with canary_of)")],
    share: Annotated[float, typer.Option(min=0.0, max=1.0, help="its new share of conversations")] = 1.0,
) -> None:
    """Give a canary a larger share of its base's conversations (all of them by default), now,
    on every worker. To make it permanent, edit temporal.yaml."""

    console.print(with_resources(lambda res: set_share(res, name, share, "promote")))


@models_app.command("rollback")
def models_rollback(name: Annotated[str, typer.Argument(help="a canary model or prompt template")]) -> None:
    """Send none of the base's conversations to this canary any more, now, on every worker."""

    console.print(with_resources(lambda res: set_share(res, name, 0.0, "rollback")))


models_app.command("rollout")(rollout)


@app.command()
def usage(
    tenant: Annotated[str | None, typer.Option(help="one tenant, by name (default: all)")] = None,
    since: Annotated[datetime | None, typer.Option(help="start, UTC (default: 30 days ago)")] = None,
    until: Annotated[datetime | None, typer.Option(help="end, UTC, exclusive (default: now)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON only")] = False,
) -> None:
    """Replies, tokens, cost and cost per 1k replies per tenant and model, from each reply's record."""
    import json

    end = (until or datetime.now(UTC)).replace(tzinfo=UTC)
    start = (since or end - timedelta(days=30)).replace(tzinfo=UTC)
    rows = with_resources(lambda res: usage_rows(res, tenant, start, end))
    if as_json:
        keys = ("tenant", "model", "model_version", "messages", "errors", "input_tokens", "output_tokens")
        out = [
            {
                **{k: getattr(r, k) for k in keys},
                "cost_usd": f"{r.cost_usd:f}",
                "cost_per_1k_messages_usd": f"{r.cost_per_1k_messages:f}",
            }
            for r in rows
        ]
        print(json.dumps({"since": start.isoformat(), "until": end.isoformat(), "rows": out}, indent=2))
        return
    console.print(usage_table(rows, start, end))
