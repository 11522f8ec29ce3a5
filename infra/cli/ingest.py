"""`turnflow ingest PATH...`: upload files and folders to a running API, with a progress bar, and wait
until every document is searchable (or say why it is not)."""

from __future__ import annotations

import asyncio
import mimetypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from activities.logic.parsing import MIME_TYPES
from infra.cli.common import console, demo_key_or_exit, settings_or_exit

SUFFIXES = {suffix for suffixes in MIME_TYPES.values() for suffix in suffixes}
DONE = {"ready", "failed", "deleted", "superseded", "unchanged"}


@dataclass
class Outcome:
    path: Path
    status: str
    document: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def collect_files(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """(files to send, files skipped for their type), as absolute paths: a file's path names its
    document, so ingesting it again (from anywhere) updates the same one. Folders are walked."""
    found: list[Path] = []
    for path in (p.resolve() for p in paths):
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist")
    wanted = [p for p in found if p.suffix.lower() in SUFFIXES]
    return wanted, [p for p in found if p.suffix.lower() not in SUFFIXES]


async def ingest_files(
    api: str, files: list[Path], headers: dict[str, str], console: Console, *, wait: bool = True
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    async with httpx.AsyncClient(
        base_url=api, headers=headers, timeout=httpx.Timeout(120, connect=5)
    ) as http:
        with Progress(*columns, console=console) as bar:
            sent = bar.add_task("uploading", total=len(files))
            for path in files:
                outcomes.append(await _upload(http, path))
                bar.advance(sent)
            pending = [o for o in outcomes if o.status not in DONE and o.document]
            if wait and pending:
                ready = bar.add_task("ingesting", total=len(pending))
                while pending:
                    await asyncio.sleep(0.5)
                    for outcome in list(pending):
                        resp = await http.get(f"/v1/documents/{outcome.document['id']}")
                        if resp.status_code != 200:
                            continue
                        outcome.document = resp.json()
                        outcome.status = outcome.document["status"]
                        outcome.error = outcome.document.get("error")
                        if outcome.status in DONE:
                            pending.remove(outcome)
                            bar.advance(ready)
    return outcomes


async def _upload(http: httpx.AsyncClient, path: Path) -> Outcome:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    try:
        resp = await http.post(
            "/v1/documents",
            params={"wait": "false"},
            files={"file": (path.name, await asyncio.to_thread(path.read_bytes), mime)},
            data={"source": str(path)},
        )
    except httpx.HTTPError as exc:
        return Outcome(path, "error", error=f"cannot reach the API: {exc}")
    body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
    if resp.status_code >= 400:
        message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
        return Outcome(path, "rejected", error=f"{resp.status_code}: {message or resp.text[:200]}")
    status = "unchanged" if body.get("unchanged") else body.get("status", "pending")
    return Outcome(path, status, document=body)


app = typer.Typer()


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="files or folders (.txt, .md, .html, .pdf)")],
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="TURNFLOW_API_KEY",
            help="an ingest key; its tenant gets the documents (default: the demo key)",
        ),
    ] = None,
    api: Annotated[str | None, typer.Option(help="the API's URL (default: this stack's)")] = None,
    wait: Annotated[bool, typer.Option(help="wait until every document is searchable")] = True,
) -> None:
    """Upload documents to a running stack; each becomes searchable once its ingestion workflow ends."""

    settings = settings_or_exit()
    try:
        files, skipped = collect_files(paths)
    except FileNotFoundError as exc:
        console.print(f"[red]✗ {exc}[/]")
        raise typer.Exit(2) from exc
    for path in skipped:
        console.print(f"[yellow]skipped {path}: not .txt, .md, .html or .pdf[/]")
    if not files:
        console.print("[red]✗ nothing to ingest[/]")
        raise typer.Exit(2)
    base = api or f"http://{settings.api_host}:{settings.api_port}"
    headers = {"Authorization": f"Bearer {api_key or demo_key_or_exit(settings)}"}
    outcomes = asyncio.run(ingest_files(base, files, headers, console, wait=wait))
    table = Table(title=f"{len(outcomes)} documents")
    for column in ("file", "status", "version", "chunks", "note"):
        table.add_column(column)
    for o in outcomes:
        colour = {"ready": "green", "unchanged": "green", "failed": "red", "rejected": "red", "error": "red"}
        table.add_row(
            str(o.path),
            f"[{colour.get(o.status, 'yellow')}]{o.status}[/]",
            str(o.document.get("version", "")),
            str(o.document.get("chunk_count", "")),
            o.error or "",
        )
    console.print(table)
    if any(o.status in ("failed", "rejected", "error") for o in outcomes):
        raise typer.Exit(1)
