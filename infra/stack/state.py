"""The running stack's state file (``<data dir>/state.json``), read by `turnflow status` and `down`."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class StackState:
    supervisor_pid: int
    started_at: float
    urls: dict[str, str] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    phases: dict[str, str] = field(default_factory=dict)


def state_path(data_dir: Path) -> Path:
    return data_dir / "state.json"


def write_state(data_dir: Path, state: StackState) -> None:
    path = state_path(data_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.replace(path)  # atomic: readers never see half a file


def read_state(data_dir: Path) -> StackState | None:
    try:
        return StackState(**json.loads(state_path(data_dir).read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def pid_alive(pid: int) -> bool:
    """True while the process runs; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        # /proc/PID/stat: "pid (comm) STATE ..."; comm may hold spaces, so split after the last ')'.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True  # no /proc (not Linux): kill(0) is the best we know
    return state != "Z"


def running_state(data_dir: Path) -> StackState | None:
    """The state of a stack whose supervisor is still alive, else None (a stale file is removed)."""
    state = read_state(data_dir)
    if state is None:
        return None
    if not pid_alive(state.supervisor_pid):
        state_path(data_dir).unlink(missing_ok=True)
        return None
    return state
