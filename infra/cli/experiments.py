"""`turnflow experiments report`: each canary model or prompt template against its base, arm by arm
(db/experiments.py)."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from db.experiments import ExperimentReport, experiment_report
from infra.cli.common import console, policy_or_exit, settings_or_exit, with_resources
from infra.config.canaries import declared_canaries
from infra.runtime.resources import Resources

experiments_app = typer.Typer(
    help="Experiments: canary models and prompt templates against their base.", no_args_is_help=True
)


def _fmt(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


async def reports(
    res: Resources, name: str | None, since: datetime, until: datetime
) -> list[ExperimentReport]:
    canaries = declared_canaries(res.registry.models, res.policy.prompts)
    if name is not None and name not in canaries:
        raise LookupError(
            f"no experiment named {name!r}: it must be a canary model or prompt in {res.settings.policy_file}"
        )
    async with res.sessions() as session:
        return [
            await experiment_report(session, c.name, c.base, since, until, res.policy.experiments, c.kind)
            for c in canaries.values()
            if name is None or c.name == name
        ]


def render(report: ExperimentReport) -> None:
    arms = Table(
        title=f"{report.name} (canary of {report.base}), {report.since:%Y-%m-%d %H:%M} → "
        f"{report.until:%Y-%m-%d %H:%M} UTC"
    )
    fields = [f for f in asdict(report.arms[0]) if f != "arm"]
    arms.add_column("")
    for arm in report.arms:
        arms.add_column(arm.arm)
    for f in fields:
        arms.add_row(f, *(_fmt(getattr(a, f)) for a in report.arms))
    console.print(arms)
    diffs = Table(
        title=f"canary - base; two-sided at {1 - report.confidence:.2g}, ≥ {report.min_samples} per arm"
    )
    for column in ("metric", "base", "canary", "difference", "test", "p", "significant", ""):
        diffs.add_column(column)
    for d in report.differences:
        diffs.add_row(
            d.metric,
            _fmt(d.base),
            _fmt(d.canary),
            _fmt(d.delta),
            d.test,
            _fmt(d.p_value),
            "yes" if d.significant else "no",
            d.note,
        )
    console.print(diffs)


@experiments_app.command("report")
def report(
    name: Annotated[
        str | None, typer.Argument(help="a canary model or prompt template (default: every one)")
    ] = None,
    since: Annotated[
        datetime | None, typer.Option(help="from, UTC (default: temporal.yaml's window ago)")
    ] = None,
    until: Annotated[datetime | None, typer.Option(help="to, UTC, exclusive (default: now)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON only")] = False,
) -> None:
    """Per arm: turns, error and moderation-flag rates, TTFT and turn p95, tokens, cost per 1k
    messages, feedback rate, mean score with its interval and thumbs-down reasons; then whether each
    difference is significant, by the test named beside it."""
    end = (until or datetime.now(UTC)).replace(tzinfo=UTC)
    start = (
        since.replace(tzinfo=UTC) if since else end - policy_or_exit(settings_or_exit()).experiments.window
    )
    if start >= end:
        raise typer.BadParameter("--since must be before --until", param_hint="--since")
    found = with_resources(lambda res: reports(res, name, start, end))
    if as_json:
        print(json.dumps([asdict(r) for r in found], default=str, indent=2))
        return
    if not found:
        console.print("no experiments: no model in temporal.yaml has canary_of")
    for r in found:
        render(r)
