"""`turnflow reembed`: start a ReembedWorkflow and follow its progress query until it ends."""

from __future__ import annotations

import asyncio
import time

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from sqlalchemy import select

from activities.contracts.reembed import ReembedInput, ReembedResult
from db.models import Tenant
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
