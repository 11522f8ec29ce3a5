"""`turnflow audit verify` and `turnflow audit head`: the audit log's hash chain (db/audit_chain.py)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from db.audit_chain import ChainHead, chain_breaks, chain_heads, heads_lost
from infra.cli.common import console, with_resources

if TYPE_CHECKING:
    from infra.runtime.resources import Resources

audit_app = typer.Typer(help="The audit log: verify its hash chain, export its heads.", no_args_is_help=True)


@audit_app.command("verify")
def verify(
    head: Annotated[
        Path | None, typer.Option(help="a head file from `turnflow audit head`: rows cut from the end show")
    ] = None,
) -> None:
    """Recompute every audit row's hash and link; name the first altered or missing row of each chain.
    Exit 1 when the log does not hold."""
    kept = [ChainHead(**h) for h in json.loads(head.read_text())] if head else []

    async def work(res: Resources) -> tuple[int, list[str]]:
        async with res.sessions() as session:
            breaks = await chain_breaks(session)
            lost = await heads_lost(session, kept)
            chains = len(await chain_heads(session))
        return chains, [b.describe() for b in breaks] + lost

    chains, problems = with_resources(work)
    for problem in problems:
        console.print(f"[red]✗ {problem}[/]")
    if problems:
        raise typer.Exit(1)
    against = f", and the {len(kept)} kept heads are there" if kept else ""
    console.print(f"[green]✓ the audit log holds: {chains} chains verified{against}[/]")


@audit_app.command("head")
def head(
    out: Annotated[Path | None, typer.Option(help="write the heads here (else print them)")] = None,
) -> None:
    """Each chain's latest row and hash, to keep outside the database (then `verify --head FILE`)."""

    async def work(res: Resources) -> list[ChainHead]:
        async with res.sessions() as session:
            return await chain_heads(session)

    heads = json.dumps([asdict(h) for h in with_resources(work)], indent=2)
    if out:
        out.write_text(heads + "\n")
        console.print(f"wrote the chain heads to {out}")
    else:
        print(heads)
