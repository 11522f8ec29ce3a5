"""Start components in order, keep them alive with backoff, stop them all in reverse order."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from infra.stack.components.base import Component, ComponentFailed
from infra.stack.process import ManagedProcess

log = logging.getLogger(__name__)

ProgressHook = Callable[[str, str], None]
"""Called with (component name, phase) as components move through starting/ready/restarting."""


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) == 0


class Supervisor:
    def __init__(
        self,
        log_dir: Path,
        *,
        restart_max: int = 5,
        restart_window_s: float = 120.0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
        on_progress: ProgressHook | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.restart_max = restart_max
        self.restart_window_s = restart_window_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.on_progress = on_progress or (lambda name, phase: None)
        self.processes: list[ManagedProcess] = []
        self._stopping = False
        self._failure: asyncio.Future[ComponentFailed] | None = None

    async def start(self, components: Sequence[Component]) -> None:
        """Start each component and wait for it to serve before the next; undo all on failure."""
        self._failure = asyncio.get_running_loop().create_future()
        try:
            for component in components:
                busy = [p for p in component.ports if port_in_use(p)]
                if busy:
                    raise ComponentFailed(
                        component.name,
                        f"port {', '.join(map(str, busy))} is already in use "
                        "(another turnflow, or set its TURNFLOW_*_PORT)",
                    )
                if component.prepare:
                    self.on_progress(component.name, "preparing")
                    await asyncio.to_thread(component.prepare)
                process = ManagedProcess(component, self.log_dir)
                self.on_progress(component.name, "starting")
                await process.start()
                self.processes.append(process)
                await process.wait_ready()
                if component.after_ready:
                    self.on_progress(component.name, "setting up")
                    await component.after_ready()
                self.on_progress(component.name, "ready")
        except BaseException:
            await self.stop()
            raise

    async def run_until_failure(self) -> ComponentFailed:
        """Watch every process; restart the ones that die. Returns only on a crash loop."""
        assert self._failure is not None, "start() first"
        watchers = [asyncio.create_task(self._watch(p)) for p in self.processes]
        try:
            return await self._failure
        finally:
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)

    async def _watch(self, process: ManagedProcess) -> None:
        restarts: deque[float] = deque()
        delay = self.backoff_initial_s
        while not self._stopping:
            assert process.proc is not None
            code = await process.proc.wait()
            if self._stopping:
                return
            now = time.monotonic()
            restarts.append(now)
            while restarts and now - restarts[0] > self.restart_window_s:
                restarts.popleft()
            if len(restarts) > self.restart_max:
                failure = ComponentFailed(
                    process.name,
                    f"crash loop: exited {len(restarts)} times in {self.restart_window_s:.0f}s "
                    f"(last exit code {code})",
                    process.log_path,
                )
                if self._failure and not self._failure.done():
                    self._failure.set_result(failure)
                return
            # A process that ran a good while before dying starts the backoff over.
            if now - process.started_at > self.restart_window_s:
                delay = self.backoff_initial_s
            log.warning(
                "%s exited with code %s; restarting in %.1fs (log: %s)",
                process.name,
                code,
                delay,
                process.log_path,
            )
            self.on_progress(process.name, "restarting")
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max_s)
            if self._stopping:
                return
            await process.start()
            try:
                await process.wait_ready()
                log.warning("%s restarted and ready (pid %s)", process.name, process.pid)
                self.on_progress(process.name, "ready")
            except ComponentFailed as exc:
                log.warning("%s", exc)

    async def stop(self) -> None:
        self._stopping = True
        for process in reversed(self.processes):
            self.on_progress(process.name, "stopping")
            await process.stop()
            self.on_progress(process.name, "stopped")
