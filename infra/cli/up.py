"""`turnflow up`, `down`, `status` and `doctor`: the embedded stack."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from typing import Annotated

import httpx
import typer
from rich.table import Table

from infra.cli.common import console, policy_or_exit, settings_or_exit
from infra.stack.doctor import run_checks, run_probe
from infra.stack.state import pid_alive, running_state
from infra.telemetry.logging_setup import configure_logging

app = typer.Typer()


@app.command()
def up() -> None:
    """Start the whole stack (embedded services where no URL is set) and supervise it until Ctrl-C."""
    from infra.stack.up import run_up

    settings = settings_or_exit()
    policy = policy_or_exit(settings)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    running = running_state(settings.data_dir)
    if running:
        console.print(
            f"[red]✗ turnflow is already running from {settings.data_dir} "
            f"(pid {running.supervisor_pid}); see `turnflow status` or `turnflow down`[/]"
        )
        raise typer.Exit(1)
    configure_logging(settings.log_level)
    handler = logging.FileHandler(settings.log_dir / "supervisor.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    raise typer.Exit(asyncio.run(run_up(settings, policy, console)))


@app.command()
def down(timeout: Annotated[float, typer.Option(help="seconds to wait")] = 60.0) -> None:
    """Stop a stack started by `turnflow up` (from another terminal)."""
    settings = settings_or_exit()
    state = running_state(settings.data_dir)
    if state is None:
        console.print("turnflow is not running")
        return
    os.kill(state.supervisor_pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    with console.status("stopping…"):
        while pid_alive(state.supervisor_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    if pid_alive(state.supervisor_pid):
        console.print(f"[red]✗ supervisor (pid {state.supervisor_pid}) still running after {timeout:.0f}s[/]")
        raise typer.Exit(1)
    console.print("stopped.")


@app.command()
def status() -> None:
    """Show the running stack's processes and the API's health report."""
    settings = settings_or_exit()
    state = running_state(settings.data_dir)
    if state is None:
        console.print("turnflow is not running")
        raise typer.Exit(3)
    table = Table(title=f"turnflow (supervisor pid {state.supervisor_pid})")
    for column in ("component", "pid", "process", "health", "detail"):
        table.add_column(column)
    health: dict[str, dict[str, object]] = {}
    api = state.urls.get("API")
    if api:
        try:
            health = httpx.get(f"{api}/healthz", timeout=10).json().get("components", {})
        except httpx.HTTPError as exc:
            console.print(f"[yellow]API health report unavailable: {exc}[/]")
    for name in sorted(set(state.pids) | set(health)):
        pid = state.pids.get(name)
        alive = "running" if pid and pid_alive(pid) else ("-" if pid is None else "dead")
        comp = health.get(name, {})
        detail = str(comp.get("error", "")) if comp.get("status") != "ok" else ""
        table.add_row(name, str(pid or "-"), alive, str(comp.get("status", "-")), detail)
    console.print(table)
    for name, url in state.urls.items():
        console.print(f"{name}: {url}")


@app.command()
def doctor(
    probe: Annotated[
        bool, typer.Option(help="also run the stack probe workflow against the running stack")
    ] = False,
) -> None:
    """Check that everything turnflow needs is installed and configured; say what is missing."""
    settings = settings_or_exit()
    failed = 0
    for check in run_checks(settings):
        mark = "[green]✓[/]" if check.ok else "[red]✗[/]"
        console.print(f"{mark} {check.name}: {check.detail}")
        failed += not check.ok
    if probe:
        ok, detail = asyncio.run(run_probe(settings))
        console.print(f"{'[green]✓[/]' if ok else '[red]✗[/]'} stack probe: {detail}")
        failed += not ok
        # The Temporal client's native runtime can abort while the interpreter finalizes; the
        # command's work is done and printed, so leave without finalizing.
        sys.stdout.flush()
        os._exit(1 if failed else 0)
    if failed:
        raise typer.Exit(1)
