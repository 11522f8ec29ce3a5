"""`turnflow retention`: run the retention workflow now."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from infra.cli.common import console, with_resources

if TYPE_CHECKING:
    from infra.runtime.resources import Resources

app = typer.Typer()


@app.command()
def retention(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only report what would go")] = False,
) -> None:
    """Run the retention workflow now (it also runs daily): each tenant's expired transcripts go from
    Postgres and Redis. Needs a running stack and worker."""
    import uuid

    from activities.contracts.maintenance import RetentionInput, RetentionReport

    async def work(res: Resources) -> RetentionReport:
        options = res.policy.options_for("retention")
        report: RetentionReport = await res.temporal.execute_workflow(
            "retention",
            RetentionInput(options=options, dry_run=dry_run),
            id=f"retention-manual-{uuid.uuid4().hex[:8]}",
            task_queue=res.policy.queue(res.policy.workflows["retention"].task_queue),
            execution_timeout=options.execution_timeout,
            result_type=RetentionReport,
        )
        return report

    report = with_resources(work)
    table = Table(title="retention" + (" (dry run: nothing deleted)" if report.dry_run else ""))
    for column in ("tenant", "days", "cutoff", "messages", "conversations", "turn streams"):
        table.add_column(column)
    for t in report.tenants:
        table.add_row(
            t.tenant,
            str(t.retention_days),
            f"{t.cutoff:%Y-%m-%d %H:%M}",
            str(t.messages),
            str(t.conversations),
            str(t.streams),
        )
    console.print(table)
    if report.kept_forever:
        console.print(f"kept (no retention set): {', '.join(report.kept_forever)}")
