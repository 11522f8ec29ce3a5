"""`turnflow deploy`: which build each Worker Deployment runs (status), ship one (promote, with a ramp
first if wanted), and go back (rollback). Thin over Temporal's Worker Deployment API; every change is
audited, like a model promotion."""

from __future__ import annotations

import getpass
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from infra.cli.common import console, settings_or_exit, with_resources
from infra.config.settings import WorkerKind
from infra.runtime.deployments import KINDS, deployment_of

if TYPE_CHECKING:
    from infra.runtime.deployments import DeploymentStatus
    from infra.runtime.resources import Resources

deploy_app = typer.Typer(
    help="Worker Deployments: each kind's current and ramping build; ship and roll back.",
    no_args_is_help=True,
)
KindOption = Annotated[
    list[str] | None, typer.Option("--kind", help="chat, batch or ingest (default: all three)")
]
WaitOption = Annotated[
    float,
    typer.Option("--wait", min=0, help="seconds to wait for the build's workers to poll before giving up"),
]


def _kinds(kinds: list[str] | None) -> list[WorkerKind]:
    unknown = sorted(set(kinds or ()) - set(KINDS))
    if unknown:
        console.print(f"[red]✗ no worker kind {', '.join(unknown)}: chat, batch or ingest[/]")
        raise typer.Exit(2)
    return [k for k in KINDS if not kinds or k in kinds]


def status_table(status: DeploymentStatus) -> Table:
    ramp = f", {status.ramping} ramping at {status.ramp_percentage:g}%" if status.ramping else ""
    table = Table(title=f"{status.name}: current {status.current or 'none (unversioned)'}{ramp}")
    for column in ("build", "status", "ramp %", "pollers", "open runs", "task queues"):
        table.add_column(column)
    for b in status.builds:
        table.add_row(
            b.build_id,
            b.status,
            f"{b.ramp_percentage:g}" if b.ramp_percentage is not None else "",
            str(b.pollers),
            str(b.open_runs),
            ", ".join(b.task_queues),
        )
    return table


@deploy_app.command("status")
def deploy_status(kind: KindOption = None) -> None:
    """Each deployment's current and ramping build, and per build its pollers and the runs still open
    on it (a pinned build drains as they finish)."""
    from infra.config.build import build_id
    from infra.runtime.deployments import describe

    settings = settings_or_exit()

    async def work(res: Resources) -> None:
        console.print(f"this checkout's build: {build_id(settings.build_id)}")
        for k in _kinds(kind):
            status = await describe(res.temporal, deployment_of(settings, k))
            if status is None:
                console.print(f"{deployment_of(settings, k)}: no worker of it has polled yet")
            else:
                console.print(status_table(status))

    with_resources(work)


async def _change(
    res: Resources, kind: WorkerKind, action: str, build: str, ramp: float | None, wait_s: float
) -> str:
    """Make ``build`` current (or ramping at ``ramp`` %) in the kind's deployment, once its workers
    poll (turns routed to a build with none wait for one); audited."""
    from db.models import AuditEvent
    from infra.runtime.deployments import describe, make_current, wait_until_polled, wait_until_settled
    from infra.runtime.deployments import ramp as set_ramp

    deployment, actor = deployment_of(res.settings, kind), f"cli:{getpass.getuser()}"
    await wait_until_polled(res.temporal, deployment, build, [res.policy.queue(kind)], timeout_s=wait_s)
    before = await describe(res.temporal, deployment, details=False)
    if ramp is None:
        await make_current(res.temporal, deployment, build, actor)
        said = f"{deployment}: {build} is current (was {before.current if before else None})"
    else:
        await set_ramp(res.temporal, deployment, build, ramp, actor)
        said = (
            f"{deployment}: {build} ramping at {ramp:g}% (current stays {before.current if before else None})"
        )
    # Done means every task queue routes by the new rule, not only that Temporal accepted it.
    said += f"; reached its task queues in {await wait_until_settled(res.temporal, deployment):.1f} s"
    async with res.sessions.begin() as session:
        session.add(
            AuditEvent(
                actor=actor,
                action=f"deploy.{action}",
                object_type="worker_deployment",
                object_id=deployment,
                details={
                    "build": build,
                    "ramp_percentage": ramp,
                    "current_before": before.current if before else None,
                    "ramping_before": before.ramping if before else None,
                },
            )
        )
    return said


@deploy_app.command("promote")
def deploy_promote(
    build: Annotated[str, typer.Argument(help="the build id (`turnflow deploy status` lists them)")],
    ramp: Annotated[
        float | None,
        typer.Option(min=0, max=100, help="send only this share of new runs to it first (percent)"),
    ] = None,
    kind: KindOption = None,
    wait: WaitOption = 60,
) -> None:
    """Make BUILD current: new runs go to it, pinned runs on older builds finish there. With --ramp,
    only that share of new runs, the current build keeping the rest."""

    async def work(res: Resources) -> list[str]:
        return [
            await _change(res, k, "ramp" if ramp is not None else "promote", build, ramp, wait)
            for k in _kinds(kind)
        ]

    for line in _run(work):
        console.print(line)


@deploy_app.command("rollback")
def deploy_rollback(kind: KindOption = None, wait: WaitOption = 60) -> None:
    """Make the build that was current before this one current again (and stop any ramp)."""
    from infra.runtime.deployments import describe

    async def work(res: Resources) -> list[str]:
        said = []
        for k in _kinds(kind):
            status = await describe(res.temporal, deployment_of(res.settings, k), details=False)
            previous = status.previous() if status else None
            if previous is None:
                said.append(f"{deployment_of(res.settings, k)}: no earlier build to go back to")
                continue
            said.append(await _change(res, k, "rollback", previous, None, wait))
        return said

    for line in _run(work):
        console.print(line)


def _run(work: Callable[[Resources], Awaitable[list[str]]]) -> list[str]:
    from temporalio.service import RPCError

    try:
        return with_resources(work)
    except RPCError as exc:
        console.print(f"[red]✗ Temporal refused: {exc.message}[/]")
        raise typer.Exit(1) from exc
    except TimeoutError as exc:  # its workers are not there: start them first, nothing was changed
        console.print(f"[red]✗ {exc}; start its workers first[/]")
        raise typer.Exit(1) from exc
