"""`turnflow ingest PATH...`: upload files and folders to a running API, with a progress bar, and wait
until every document is searchable (or say why it is not)."""

from __future__ import annotations

import asyncio
import mimetypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from activities.logic.parsing import MIME_TYPES

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
