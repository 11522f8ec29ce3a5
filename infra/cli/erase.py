"""`turnflow erase`: an operator erases a conversation, an end user's data, or a whole tenant's, now."""

from __future__ import annotations

import getpass
import uuid
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from activities.contracts.maintenance import ErasureCounts
from api.services.erasure import start_erasure
from infra.cli.access import tenant_id
from infra.cli.common import console, with_resources

if TYPE_CHECKING:
    from infra.runtime.resources import Resources

app = typer.Typer()


@app.command()
def erase(
    tenant: Annotated[str, typer.Option(help="the tenant, by name")],
    conversation: Annotated[list[str] | None, typer.Option(help="a conversation id (repeatable)")] = None,
    end_user: Annotated[str | None, typer.Option(help="every conversation of this end user")] = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="confirm erasing every conversation of the tenant")
    ] = False,
) -> None:
    """Erase now, from Postgres, Redis, the trace store and Temporal (the turns' workflow executions),
    and audit it with counts (never content). Idempotent and resumable: run it again to finish."""
    if conversation and end_user:
        console.print("[red]✗ --conversation or --end-user, not both[/]")
        raise typer.Exit(2)
    if not conversation and end_user is None and not yes:
        console.print("[red]✗ that erases every conversation of the tenant: add --yes to mean it[/]")
        raise typer.Exit(2)
    try:
        ids = [str(uuid.UUID(c)) for c in conversation] if conversation else None
    except ValueError as exc:
        console.print(f"[red]✗ not a conversation id: {exc}[/]")
        raise typer.Exit(2) from exc

    async def work(res: Resources) -> ErasureCounts:
        found = await tenant_id(res, tenant)
        handle = await start_erasure(
            res, found, f"cli:{getpass.getuser()}", conversation_ids=ids, end_user=end_user
        )
        console.print(f"erasing ({handle.id})…")
        return await handle.result()

    counts = with_resources(work)
    table = Table(title=f"erased from tenant {tenant}")
    for name in ErasureCounts.model_fields:
        table.add_column(name.replace("_", " "), justify="right")
    table.add_row(*(str(getattr(counts, name)) for name in ErasureCounts.model_fields))
    console.print(table)
