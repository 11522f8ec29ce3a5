"""One supervised child process: start it with its own log, wait until it serves, stop it whole."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import time
from pathlib import Path

from infra.stack.components.base import Component, ComponentFailed

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # If the supervisor is killed outright, the kernel stops its children too: no orphans.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess:
    def __init__(self, component: Component, log_dir: Path) -> None:
        self.component = component
        self.log_path = log_dir / f"{component.name}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at = 0.0

    @property
    def name(self) -> str:
        return self.component.name

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        c = self.component
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            out.write(f"\n--- turnflow: starting {c.name}: {' '.join(c.argv)}\n".encode())
            out.flush()
            self.proc = await asyncio.create_subprocess_exec(
                *c.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                cwd=c.cwd,
                env={**os.environ, **c.env},
                user=c.user,
                # Own process group, so stop() reaches grandchildren and Ctrl-C reaches only us.
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.started_at = time.monotonic()
        log.debug("%s started, pid %s", c.name, self.proc.pid)

    async def wait_ready(self) -> None:
        """Poll the ready check until it passes; fail fast if the process exits meanwhile."""
        assert self.proc is not None
        deadline = time.monotonic() + self.component.startup_timeout_s
        last_error: BaseException | None = None
        while True:
            if self.proc.returncode is not None:
                raise ComponentFailed(
                    self.name,
                    f"exited with code {self.proc.returncode} while starting",
                    self.log_path,
                )
            try:
                await asyncio.wait_for(self.component.ready(), timeout=5)
                return
            except Exception as exc:
                last_error = exc
            if time.monotonic() > deadline:
                raise ComponentFailed(
                    self.name,
                    f"not ready after {self.component.startup_timeout_s:.0f}s: {last_error}",
                    self.log_path,
                )
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        """Signal the whole process group (SIGTERM by default), then SIGKILL what is left after the grace."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        _signal_group(proc.pid, self.component.stop_signal)
        try:
            await asyncio.wait_for(proc.wait(), timeout=self.component.stop_timeout_s)
        except TimeoutError:
            log.warning("%s did not stop in %.0fs; killing it", self.name, self.component.stop_timeout_s)
            _signal_group(proc.pid, signal.SIGKILL)
            await proc.wait()
        # Grandchildren that ignored SIGTERM must not outlive their leader.
        _signal_group(proc.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
