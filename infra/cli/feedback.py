"""`turnflow feedback export`: users' verdicts with each reply's provenance, for offline evaluation."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from db.feedback import export_rows
from infra.cli.access import tenant_id
from infra.cli.common import console, with_resources
from infra.runtime.resources import Resources

feedback_app = typer.Typer(help="Users' verdicts on replies.", no_args_is_help=True)


class Format(StrEnum):
    jsonl = "jsonl"
    parquet = "parquet"


def _plain(value: Any) -> Any:
    """JSON- and Arrow-friendly: ids and timestamps as strings, money as a decimal string."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


async def collect(
    res: Resources, since: datetime, until: datetime, tenant: str | None
) -> list[dict[str, Any]]:
    """The rows, comments opened (they are sealed at rest)."""
    only = await tenant_id(res, tenant) if tenant else None
    async with res.sessions() as session:
        rows = [row async for row in export_rows(session, since, until, only)]
    for row in rows:
        if row["comment"]:
            row["comment"] = await res.sealer.open(row["tenant_id"], row["comment"])
        row.pop("tenant_id")
    return [{k: _plain(v) for k, v in row.items()} for row in rows]


def write(rows: list[dict[str, Any]], fmt: Format, output: Path | None) -> None:
    if fmt is Format.jsonl:
        text = "".join(json.dumps(row) + "\n" for row in rows)
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    if output is None:
        raise typer.BadParameter("parquet needs --output FILE", param_hint="--output")
    # Columns typed from the rows; an empty export still has its columns, as strings.
    table = (
        pa.Table.from_pylist(rows)
        if rows
        else pa.table({name: pa.array([], pa.string()) for name in COLUMNS})
    )
    pq.write_table(table, output)


COLUMNS = (
    "feedback_id tenant message_id conversation_id turn_id score reason comment created_at updated_at model "
    "model_version prompt_template_version route retrieved_chunks ttft_ms latency_ms output_tokens cost_usd "
    "redacted error"
).split()


@feedback_app.command("export")
def export(
    since: Annotated[
        datetime | None, typer.Option(help="verdicts given or changed from, UTC (default: 7 days ago)")
    ] = None,
    until: Annotated[datetime | None, typer.Option(help="up to, UTC, exclusive (default: now)")] = None,
    fmt: Annotated[
        Format, typer.Option("--format", help="jsonl (stdout or --output) or parquet")
    ] = Format.jsonl,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="file to write")] = None,
    tenant: Annotated[str | None, typer.Option(help="one tenant, by name (default: all)")] = None,
) -> None:
    """Every current verdict with the reply's provenance: model and version, prompt template, route
    (rule, canary, arms), retrieved chunk versions, latency, tokens, cost, moderation and error."""
    end = (until or datetime.now(UTC)).replace(tzinfo=UTC)
    start = (since or end - timedelta(days=7)).replace(tzinfo=UTC)
    if start >= end:
        raise typer.BadParameter("--since must be before --until", param_hint="--since")
    rows = with_resources(lambda res: collect(res, start, end, tenant))
    write(rows, fmt, output)
    if output is not None:
        console.print(
            f"{len(rows)} verdicts from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC → {output}"
        )
