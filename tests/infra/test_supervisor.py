"""The supervisor with real child processes: readiness, clear failures, restarts, crash loops, clean stops."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from infra.stack.components.base import Component, ComponentFailed
from infra.stack.state import pid_alive
from infra.stack.supervisor import Supervisor
from tests.support.services import free_port


def http_server(name: str, port: int, **extra: object) -> Component:
    async def ready() -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()

    return Component(
        name=name,
        argv=[sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        ready=ready,
        ports=[port],
        startup_timeout_s=20,
        **extra,  # type: ignore[arg-type]
    )


async def always_ready() -> None:
    return None


async def test_starts_in_order_and_stops_in_reverse(tmp_path: Path) -> None:
    phases: list[tuple[str, str]] = []
    sup = Supervisor(tmp_path, on_progress=lambda n, p: phases.append((n, p)))
    await sup.start([http_server("a", free_port()), http_server("b", free_port())])
    pids = [p.pid for p in sup.processes]
    assert all(pid and pid_alive(pid) for pid in pids)
    await sup.stop()
    assert [p for p in phases if p[1] in ("ready", "stopped")] == [
        ("a", "ready"),
        ("b", "ready"),
        ("b", "stopped"),
        ("a", "stopped"),
    ]
    assert (tmp_path / "a.log").exists()


async def test_exit_during_start_is_one_clear_error(tmp_path: Path) -> None:
    async def never_ready() -> None:
        raise ConnectionRefusedError("not yet")

    bad = Component(
        name="broken",
        argv=[sys.executable, "-c", "import sys; print('bad config file'); sys.exit(3)"],
        ready=never_ready,
    )
    first = http_server("first", free_port())
    sup = Supervisor(tmp_path)
    with pytest.raises(ComponentFailed) as err:
        await sup.start([first, bad])
    message = str(err.value)
    assert message.startswith("broken: exited with code 3 while starting")
    assert str(tmp_path / "broken.log") in message
    assert "bad config file" in (tmp_path / "broken.log").read_text()
    # What had started is stopped again.
    assert not sup.processes[0].running


async def test_not_ready_in_time(tmp_path: Path) -> None:
    async def never_ready() -> None:
        raise ConnectionRefusedError("nobody home")

    slow = Component(
        name="slow",
        argv=[sys.executable, "-c", "import time; time.sleep(60)"],
        ready=never_ready,
        startup_timeout_s=0.5,
    )
    sup = Supervisor(tmp_path)
    with pytest.raises(ComponentFailed, match=r"slow: not ready after 0s: nobody home"):
        await sup.start([slow])
    assert not sup.processes[0].running


async def test_port_in_use_is_refused_before_starting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sup = Supervisor(tmp_path)
        with pytest.raises(ComponentFailed, match=f"port {port} is already in use"):
            await sup.start([http_server("web", port)])
    assert sup.processes == []


async def test_killed_component_is_restarted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    phases: list[tuple[str, str]] = []
    sup = Supervisor(tmp_path, backoff_initial_s=0.1, on_progress=lambda n, p: phases.append((n, p)))
    await sup.start([http_server("web", free_port())])
    watcher = asyncio.create_task(sup.run_until_failure())
    old_pid = sup.processes[0].pid
    assert old_pid
    os.kill(old_pid, signal.SIGKILL)
    for _ in range(100):
        if sup.processes[0].pid != old_pid and ("web", "ready") in phases[2:]:
            break
        await asyncio.sleep(0.1)
    assert sup.processes[0].pid != old_pid
    assert sup.processes[0].running
    assert ("web", "restarting") in phases
    assert "web exited with code -9; restarting" in caplog.text
    assert not watcher.done()
    watcher.cancel()
    await sup.stop()


async def test_crash_loop_stops_with_clear_error(tmp_path: Path) -> None:
    flaky = Component(
        name="flaky",
        argv=[sys.executable, "-c", "import time; time.sleep(0.2)"],
        ready=always_ready,
    )
    sup = Supervisor(tmp_path, restart_max=2, restart_window_s=30, backoff_initial_s=0.05)
    await sup.start([flaky])
    failure = await asyncio.wait_for(sup.run_until_failure(), timeout=20)
    assert failure.name == "flaky"
    assert "crash loop: exited 3 times in 30s (last exit code 0)" in str(failure)
    await sup.stop()


async def test_stop_reaches_grandchildren_and_stubborn_processes(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(300)\n"
    )

    async def has_child() -> None:
        if not pid_file.exists() or not pid_file.read_text():
            raise FileNotFoundError(pid_file)

    stubborn = Component(
        name="stubborn", argv=[sys.executable, "-c", script], ready=has_child, stop_timeout_s=0.5
    )
    sup = Supervisor(tmp_path)
    await sup.start([stubborn])
    grandchild = int(pid_file.read_text())
    leader = sup.processes[0].pid
    assert leader and pid_alive(grandchild)
    await sup.stop()
    await asyncio.sleep(0.2)
    assert not pid_alive(leader)
    assert not pid_alive(grandchild)
