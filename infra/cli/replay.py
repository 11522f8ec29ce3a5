"""`turnflow replay` and `GET /v1/turns/{id}/audit`: a past turn, replayed and reconstructed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from temporalio.client import WorkflowHistory


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
