"""`turnflow up`: start the stack, show progress and URLs, supervise it, stop it all on Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from infra.config.endpoints import Endpoints
from infra.config.policy import Policy
from infra.config.settings import Settings
from infra.stack.components.base import ComponentFailed
from infra.stack.embedded import build_stack
from infra.stack.state import StackState, state_path, write_state
from infra.stack.supervisor import Supervisor

log = logging.getLogger("turnflow.up")


def url_table(urls: dict[str, str], log_dir: str) -> Table:
    table = Table(title="turnflow is up", show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("where")
    for name, url in urls.items():
        table.add_row(name, url)
    table.add_row("Logs", log_dir)
    return table


async def _demo_key(settings: Settings, endpoints: Endpoints) -> Path:
    """The demo tenant and its key (made on the first start, kept in the data dir, owner-only)."""
    from db.access import demo_key_file, ensure_demo_key
    from db.engine import make_engine, make_sessionmaker

    engine = make_engine(endpoints.database_url, role=settings.database_role or None)
    try:
        await ensure_demo_key(make_sessionmaker(engine), settings)
    finally:
        await engine.dispose()
    return demo_key_file(settings)


async def run_up(settings: Settings, policy: Policy, console: Console) -> int:
    """Returns the process exit code: 0 after a clean Ctrl-C, 1 when a component fails."""
    try:
        endpoints, components = build_stack(settings, policy)
    except ComponentFailed as exc:
        console.print(f"[red]✗ {exc}[/]")
        return 1
    state = StackState(supervisor_pid=os.getpid(), started_at=time.time())
    started: dict[str, float] = {}
    status = console.status("starting turnflow…")

    def on_progress(name: str, phase: str) -> None:
        state.phases[name] = phase
        process = next((p for p in supervisor.processes if p.name == name), None)
        if process and process.pid:
            state.pids[name] = process.pid
        write_state(settings.data_dir, state)
        if phase == "starting":
            started.setdefault(name, time.monotonic())
        if phase == "ready" and name in started:
            console.print(f"[green]✓[/] {name} ready ({time.monotonic() - started.pop(name):.1f}s)")
        elif phase in ("restarting", "stopped"):
            console.print(f"[yellow]•[/] {name} {phase}")
        status.update(f"{name}: {phase}…")

    supervisor = Supervisor(
        settings.log_dir,
        restart_max=settings.restart_max,
        restart_window_s=settings.restart_window_s,
        on_progress=on_progress,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    external = sorted({"temporal", "postgres", "redis", "model"} - endpoints.embedded)
    if external:
        console.print(f"using configured services for: {', '.join(external)}")
    exit_code = 0
    try:
        status.start()
        start = asyncio.create_task(supervisor.start(components))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([start, stopper], return_when=asyncio.FIRST_COMPLETED)
        status.stop()
        if stopper.done():
            start.cancel()
            await asyncio.gather(start, return_exceptions=True)
            console.print("interrupted while starting; stopped")
            return 130
        start.result()
        urls = {k: v for c in components for k, v in c.urls.items()}
        state.urls = urls
        write_state(settings.data_dir, state)
        console.print(url_table(urls, str(settings.log_dir.resolve())))
        if "API" in urls:
            key_file = await _demo_key(settings, endpoints)
            console.print(f"Chat: POST {urls['API']}/v1/conversations, then .../v1/conversations/ID/messages")
            console.print(f"  with Authorization: Bearer $(cat {key_file})  (the demo tenant's key)")
        console.print("Press Ctrl-C to stop.")
        failure = asyncio.create_task(supervisor.run_until_failure())
        await asyncio.wait([failure, stopper], return_when=asyncio.FIRST_COMPLETED)
        if failure.done():
            console.print(f"[red]✗ {failure.result()}[/]")
            exit_code = 1
        else:
            failure.cancel()
            await asyncio.gather(failure, return_exceptions=True)
    except ComponentFailed as exc:
        status.stop()
        console.print(f"[red]✗ {exc}[/]")
        exit_code = 1
    finally:
        status.stop()
        console.print("stopping…")
        await supervisor.stop()
        state_path(settings.data_dir).unlink(missing_ok=True)
        console.print("stopped.")
    return exit_code
