"""What every `turnflow` command shares: the console, settings and policy that exit cleanly when
invalid, and the stack's resources for one command."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import typer
from rich.console import Console

from infra.config.policy import Policy, PolicyError, load_policy
from infra.config.settings import Settings, get_settings

console = Console()
T = TypeVar("T")

if TYPE_CHECKING:
    from infra.runtime.resources import Resources


def settings_or_exit() -> Settings:
    try:
        return get_settings()
    except ValueError as exc:
        console.print(f"[red]✗ invalid settings: {exc}[/]")
        raise typer.Exit(2) from exc


def demo_key_or_exit(settings: Settings) -> str:
    from db.access import demo_key_file

    path = demo_key_file(settings)
    if not path.exists():
        console.print(
            f"[red]✗ no API key: pass --api-key (or TURNFLOW_API_KEY); {path} appears on `turnflow up`[/]"
        )
        raise typer.Exit(2)
    return path.read_text().strip()


def policy_or_exit(settings: Settings) -> Policy:
    try:
        return load_policy(settings.policy_file, settings.policy_overlay_file)
    except PolicyError as exc:
        console.print(f"[red]✗ {exc}[/]")
        raise typer.Exit(2) from exc


def with_resources(work: Callable[[Resources], Awaitable[T]]) -> T:
    """Run ``work`` against the stack's Postgres and Redis; a stack that is not up is one clear line."""

    async def run() -> T:
        from infra.runtime.resources import Resources

        res = await Resources.open(settings_or_exit(), lazy_temporal=True)
        try:
            return await work(res)
        finally:
            await res.close()

    try:
        return asyncio.run(run())
    except LookupError as exc:
        console.print(f"[red]✗ {exc.args[0]}[/]")
        raise typer.Exit(1) from exc
    except OSError as exc:
        console.print(f"[red]✗ cannot reach the stack: {exc}[/] (start it with `turnflow up`)")
        raise typer.Exit(1) from exc
