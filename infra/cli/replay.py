"""`turnflow replay` and `GET /v1/turns/{id}/audit`: a past turn, replayed and reconstructed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from temporalio.client import WorkflowHistory

from infra.cli.common import console, with_resources


def export(directory: Path, history: WorkflowHistory, report: dict[str, Any]) -> list[Path]:
    """The history as Temporal stores it (payloads encrypted) and the reconstruction, side by side."""
    directory.mkdir(parents=True, exist_ok=True)
    history_file = directory / f"{history.workflow_id}.history.json"
    history_file.write_text(history.to_json())
    report_file = directory / f"{history.workflow_id}.reconstruction.json"
    report_file.write_text(json.dumps(report, indent=2, default=str))
    return [history_file, report_file]


def load_exported(path: Path) -> WorkflowHistory:
    turn_id = path.name.removesuffix(".json").removesuffix(".history")
    return WorkflowHistory.from_json(turn_id, path.read_text())


def show(console: Console, report: dict[str, Any]) -> None:
    replay = report["replay"]
    verdict = (
        "[green]reproduced by the current workflow code[/]"
        if replay["reproduced"]
        else f"[red]NOT reproduced (non-deterministic): {replay['failure']}[/]"
    )
    console.print(f"turn {report['turn_id']}: {verdict}")
    inp = report.get("input", {})
    console.print(
        f"input (as redacted): {inp.get('user_text')!r}  PII found: {inp.get('pii_counts') or 'none'}"
    )
    route = report.get("route") or {}
    if route:
        chain = ", ".join(f"{t['name']}@{t['version']}" for t in route.get("chain", []))
        console.print(f"route: {route.get('rule')} — {route.get('reason')}; chain {chain}")
    chunks = (report.get("retrieval") or {}).get("chunks", [])
    if chunks:
        table = Table(title="retrieved chunks")
        for column in ("chunk", "document", "doc version", "embedding version", "score"):
            table.add_column(column)
        for c in chunks:
            table.add_row(
                c["id"],
                c["document_id"],
                str(c["document_version"]),
                str(c.get("embedding_version")),
                f"{c['score']:.3f}",
            )
        console.print(table)
    for n, attempt in enumerate(report.get("inference", []), 1):
        result = attempt.get("result") or {}
        console.print(
            f"inference {n}: {attempt['model']}@{attempt.get('version')} at {attempt.get('endpoint')} — "
            f"{attempt.get('outcome', 'no outcome')}"
            + (f" ({attempt['error']})" if attempt.get("error") else "")
        )
        console.print("  prompt sent:")
        for message in attempt.get("prompt_sent") or []:
            console.print(f"    [{message['role']}] {message['content']}", markup=False)
        if result:
            console.print(f"  output: {result.get('text')!r}", markup=False)
            console.print(
                f"  tokens out {result.get('output_tokens')}, TTFT {result.get('ttft_ms')} ms, "
                f"finish {result.get('finish_reason')}"
            )
    moderation = report.get("moderation")
    if moderation is not None:
        said = "redacted: " + str(moderation["reason"]) if moderation["redacted"] else "passed"
        console.print(f"moderation: {said}")
    console.print(f"timings (ms): {report.get('timings_ms')}")


if TYPE_CHECKING:
    from infra.runtime.resources import Resources

app = typer.Typer()


@app.command()
def replay(
    turn_id: Annotated[str | None, typer.Argument(help="the turn (its X-Turn-ID)")] = None,
    history: Annotated[
        Path | None, typer.Option(help="replay an exported <turn>.history.json instead of fetching it")
    ] = None,
    export_dir: Annotated[
        Path | None, typer.Option("--export", help="write the history and the reconstruction here")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the reconstruction as JSON")] = False,
) -> None:
    """Replay a past turn against the current workflow code and show what it did: input as redacted,
    route, retrieved chunks with versions, the exact prompt, model and version, output, moderation,
    timings. Exit 1 when the recorded decisions are not reproduced."""
    import json

    from workers.replay import fetch_history, turn_audit

    if (turn_id is None) == (history is None):
        console.print("[red]✗ name a turn id, or --history FILE[/]")
        raise typer.Exit(2)
    if history is not None and not history.is_file():
        console.print(f"[red]✗ {history}: no such file[/]")
        raise typer.Exit(2)

    async def work(res: Resources) -> tuple[dict[str, object], list[Path]]:
        recorded = load_exported(history) if history else await fetch_history(res, str(turn_id))
        report = await turn_audit(res, recorded)
        return report, export(export_dir, recorded, report) if export_dir else []

    report, files = with_resources(work)
    if as_json:
        print(json.dumps(report, indent=2, default=str))
    else:
        show(console, report)
    for path in files:
        console.print(f"wrote {path}")
    if not report["replay"]["reproduced"]:  # type: ignore[index]
        raise typer.Exit(1)
