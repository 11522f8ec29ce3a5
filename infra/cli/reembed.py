"""`turnflow reembed`: start a ReembedWorkflow and follow its progress query until it ends."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import select

from activities.contracts.reembed import ReembedInput, ReembedResult
from db.models import Tenant
from infra.cli.common import console, settings_or_exit
from infra.config.settings import Settings
from infra.runtime.resources import Resources


async def run_reembed(
    settings: Settings,
    console: Console,
    model: str | None,
    version: str | None,
    tenant_names: list[str] | None,
    *,
    wait: bool = True,
) -> ReembedResult | None:
    res = await Resources.open(settings)
    try:
        tenant_ids = None
        if tenant_names:
            async with res.sessions() as session:
                rows = (
                    await session.execute(select(Tenant.name, Tenant.id).where(Tenant.name.in_(tenant_names)))
                ).all()
            found = {name: str(tid) for name, tid in rows}
            missing = sorted(set(tenant_names) - set(found))
            if missing:
                raise LookupError(f"no tenant named {', '.join(missing)}")
            tenant_ids = list(found.values())
        options = res.policy.options_for("reembed")
        workflow_id = f"reembed-manual-{int(time.time())}"
        handle = await res.temporal.start_workflow(
            "reembed",
            ReembedInput(options=options, target_model=model, target_version=version, tenant_ids=tenant_ids),
            id=workflow_id,
            task_queue=res.policy.queue(res.policy.workflows["reembed"].task_queue),
            execution_timeout=options.execution_timeout,
            result_type=ReembedResult,
        )
        console.print(f"started {workflow_id} (follow it in the Temporal web UI)")
        if not wait:
            return None
        result_task: asyncio.Task[ReembedResult] = asyncio.create_task(handle.result())
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("planning")
            while not result_task.done():
                await asyncio.wait({result_task}, timeout=1.0)
                try:
                    p = await handle.query("progress")
                except Exception:  # the query can race the run's end; the result says the rest
                    continue
                bar.update(
                    task,
                    description=(
                        f"{p.get('stage')}: tenant {p.get('tenants_done', 0)}/{p.get('tenants_total', '?')},"
                        f" {p.get('embedded', 0)} chunks embedded"
                    ),
                )
        return result_task.result()
    finally:
        await res.close()


app = typer.Typer()


@app.command()
def reembed(
    model: Annotated[
        str | None, typer.Option(help="embedding model id to move to (default: the deployment's)")
    ] = None,
    version: Annotated[str | None, typer.Option(help="its version (default: the one configured)")] = None,
    tenant: Annotated[list[str] | None, typer.Option(help="only these tenants (by name); repeatable")] = None,
    wait: Annotated[bool, typer.Option(help="follow the run until it ends")] = True,
) -> None:
    """Re-embed tenants' chunks with another embedder: new vectors beside the old, a canary check,
    an atomic switch, then the old vectors dropped. Needs a running stack and worker."""

    settings = settings_or_exit()
    try:
        result = asyncio.run(run_reembed(settings, console, model, version, tenant, wait=wait))
    except (RuntimeError, LookupError) as exc:
        console.print(f"[red]✗ {exc}[/]")
        raise typer.Exit(1) from exc
    if result is None:
        return
    table = Table(title=f"re-embedded to {result.target.model}@{result.target.version}")
    for column in ("tenant", "status", "embedded", "canary recall new / current", "dropped"):
        table.add_column(column)
    for r in result.tenants:
        canary = f"{r.canary.recall_new:.2f} / {r.canary.recall_current:.2f}" if r.canary else ""
        table.add_row(r.tenant_id, r.status, str(r.embedded), canary, str(r.dropped))
    console.print(table)
    if any(r.status == "kept" for r in result.tenants):
        raise typer.Exit(1)
