"""Where a turn's CPU goes inside each Python process of the stack: py-spy samples a process for a
load level (`bench/load.py --profile`), and the samples are summed by package and by function.

Only on-CPU samples count (py-spy's default skips idle threads), so the shares are of the CPU the
process spent, which bench/load.py also measures per turn from /proc.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
# "function (path/to/file.py:123)": a frame of py-spy's collapsed ("raw") format.
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^:()]+)(?::\d+)?\)$")
_OURS = ("api", "activities", "workflows", "infra", "db", "workers")


def start(pid: int, out: Path, rate: int = 250) -> subprocess.Popen[bytes]:
    """Sample ``pid`` until stop() (py-spy writes its file when it receives SIGINT)."""
    argv = [PY_SPY, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--output", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def area(file: str) -> str:
    """The package a frame's file belongs to: ours by top-level folder, a library by its name."""
    parts = Path(file).parts
    if "site-packages" in parts:
        rest = parts[parts.index("site-packages") + 1 :]
        return rest[0].removesuffix(".py") if rest else "?"
    for i, part in enumerate(parts):
        if part in _OURS and i + 1 < len(parts):
            return f"turnflow.{part}"
    if "python3" in "".join(parts) or file.startswith("<frozen"):
        # The standard library: asyncio, json, ssl... by module.
        return f"stdlib.{Path(file).stem}" if "asyncio" not in parts else "stdlib.asyncio"
    return Path(file).stem


def summarize(path: Path, top: int = 12) -> dict[str, Any]:
    """Self time by package and by function, and inclusive time of our own modules' functions."""
    by_area, by_func, inclusive = Counter[str](), Counter[str](), Counter[str]()
    total = 0
    if not path.exists():
        return {"samples": 0}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [m for f in stack.split(";") if (m := _FRAME.match(f.strip()))]
        if not frames:
            continue
        total += n
        leaf = frames[-1]
        by_area[area(leaf["file"])] += n
        by_func[f"{leaf['func']} ({Path(leaf['file']).name})"] += n
        seen = set()
        for frame in frames:  # each of our functions once per sample, however deep it recurses
            if area(frame["file"]).startswith("turnflow."):
                name = f"{frame['func']} ({Path(frame['file']).name})"
                if name not in seen:
                    seen.add(name)
                    inclusive[name] += n

    def shares(counter: Counter[str]) -> list[list[Any]]:
        return [[k, round(100 * v / total, 1)] for k, v in counter.most_common(top)]

    return {
        "samples": total,
        "self_by_package_pct": shares(by_area),
        "self_by_function_pct": shares(by_func),
        "ours_inclusive_pct": shares(inclusive),
    }
