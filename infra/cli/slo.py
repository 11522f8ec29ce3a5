"""`turnflow slo` and `turnflow drift`: the reports the API gives, printed for an operator."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from db.drift import DriftOut
from db.slo import SloOut, compute_slo
from infra.cli.access import tenant_id
from infra.cli.common import console, with_resources
from infra.runtime.resources import Resources


async def slo_for(res: Resources, window: timedelta | None, tenant: str | None) -> SloOut:
    span = window or res.policy.slo.window
    scope = await tenant_id(res, tenant) if tenant else None
    return await compute_slo(res.sessions, res.policy.slo.objectives, span, scope, tenant or "platform")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ratio":
        return f"{value:.2%}"
    return f"${value:.4f}" if unit == "usd" else f"{value:.0f} ms"


def show_slo(console: Console, report: SloOut) -> None:
    table = Table(title=f"SLOs · {report.scope} · last {report.window} · {report.turns} turns")
    for column in ("objective", "target", "value", "met", "budget left", "good / eligible"):
        table.add_column(column, justify="right" if column != "objective" else "left")
    for o in report.objectives:
        met = "no data" if o.met is None else "[green]✓[/]" if o.met else "[red]✗[/]"
        budget = "-" if o.error_budget_remaining is None else f"{o.error_budget_remaining:.1%}"
        table.add_row(
            o.description or o.name,
            o.objective,
            _value(o.value, o.unit),
            met,
            budget,
            f"{o.good} / {o.eligible}",
        )
    console.print(table)


def show_drift(console: Console, report: DriftOut) -> None:
    table = Table(
        title=f"Drift · {report.since:%H:%M} → {report.until:%H:%M} UTC against the baseline "
        f"since {report.baseline_since:%Y-%m-%d %H:%M}"
    )
    for column in ("signal", "subject", "recent", "baseline", "score", "threshold", "samples", ""):
        table.add_column(column)
    for s in report.signals:
        flag = "[red]drifted[/]" if s.flagged else s.note or "steady"
        table.add_row(
            s.signal,
            s.subject,
            _num(s.recent),
            _num(s.baseline),
            _num(s.score),
            f"{s.threshold:g}",
            f"{s.recent_samples} / {s.baseline_samples}",
            flag,
        )
    console.print(table)
    console.print(f"{report.flagged} signal(s) flagged")


app = typer.Typer()


@app.command()
def slo(
    window: Annotated[
        str | None, typer.Option(help="e.g. 15m, 1h, 7d (default: temporal.yaml's slo.window)")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="one tenant, by name (default: the platform)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON only")] = False,
) -> None:
    """Each objective of temporal.yaml's `slo:` over the window: value, met or not, error budget left.
    Exit 1 when an objective is not met."""
    from infra.config.durations import parse_duration

    try:
        span = parse_duration(window) if window else None
    except (ValueError, OverflowError) as exc:
        console.print(f"[red]✗ --window: {exc}[/]")
        raise typer.Exit(2) from exc
    report = with_resources(lambda res: slo_for(res, span, tenant))
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        show_slo(console, report)
    if any(o.met is False for o in report.objectives):
        raise typer.Exit(1)


@app.command()
def drift(as_json: Annotated[bool, typer.Option("--json", help="print JSON only")] = False) -> None:
    """Retrieval score distributions and query centroids per tenant, and p95 latency per model version:
    the recent window against its baseline, flagged past temporal.yaml's `drift:`. Exit 1 when flagged."""
    from db.drift import compute_drift

    report = with_resources(lambda res: compute_drift(res.sessions, res.policy.drift))
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        show_drift(console, report)
    if report.flagged:
        raise typer.Exit(1)
