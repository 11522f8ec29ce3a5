"""What the supervisor needs to know about one embedded component."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

ReadyCheck = Callable[[], Awaitable[None]]
"""Returns when the component serves; raises (any exception) while it does not yet."""


class ComponentFailed(RuntimeError):
    """A component could not start or keeps dying; the message says which, why, and its log."""

    def __init__(self, name: str, reason: str, log_path: Path | None = None) -> None:
        where = f" (log: {log_path})" if log_path else ""
        super().__init__(f"{name}: {reason}{where}")
        self.name = name
        self.reason = reason
        self.log_path = log_path


@dataclass
class Component:
    name: str
    argv: list[str]
    ready: ReadyCheck
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    # URLs shown to the user once the component is up.
    urls: dict[str, str] = field(default_factory=dict)
    # One-time setup before the first start (e.g. initdb); runs again only if it did not finish.
    prepare: Callable[[], None] | None = None
    # Work to do once ready, before later components start (e.g. migrations).
    after_ready: Callable[[], Awaitable[None]] | None = None
    # Run as this OS user (Postgres refuses to run as root).
    user: str | None = None
    ports: list[int] = field(default_factory=list)
    startup_timeout_s: float = 120.0
    stop_timeout_s: float = 15.0
    stop_signal: signal.Signals = signal.SIGTERM
