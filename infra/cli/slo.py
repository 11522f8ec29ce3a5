"""`turnflow slo` and `turnflow drift`: the reports the API gives, printed for an operator."""

from __future__ import annotations

from datetime import timedelta

from rich.console import Console
from rich.table import Table

from db.drift import DriftOut
from db.slo import SloOut, compute_slo
from infra.cli.access import tenant_id
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
