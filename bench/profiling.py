"""Where a turn's CPU goes inside each Python process of the stack: py-spy samples a process for a
load level (`bench/load.py --profile`), and the samples are summed by package and by function.

Only samples of the thread holding the GIL count, so the shares are of the Python CPU the process
spent (bench/load.py measures its whole CPU per turn from /proc; the rest is native threads', such
as the Temporal SDK's core).
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


def start(pid: int, out: Path, rate: int = 100) -> subprocess.Popen[bytes]:
    """Sample ``pid`` until stop() (py-spy writes its file when it receives SIGINT). Only the thread
    holding the GIL is sampled (`--gil`: Python's own CPU; threads waiting in pools are not work),
    without pausing the process (`--nonblocking`: the load it serves stays what it was)."""
    argv = [
        PY_SPY,
        "record",
        "--pid",
        str(pid),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--gil",
        "--nonblocking",
    ]
    argv += ["--output", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def area(file: str) -> str:
    """The package a frame's file belongs to. py-spy names files from their import root
    (`temporalio/worker/_activity.py`, `activities/chat/inference.py`, `asyncio/tasks.py`)."""
    parts = Path(file).parts
    if "site-packages" in parts:  # a full path, where py-spy could not shorten it
        parts = parts[parts.index("site-packages") + 1 :]
    if not parts:
        return "?"
    head = parts[0].removesuffix(".py")
    return f"turnflow.{head}" if head in _OURS else head


# What a sample's leaf belongs to, by the first pattern its file matches (the libraries by concern).
GROUPS = (
    (
        "payload codec",
        ("infra/runtime/payload_codec.py", "temporalio/converter.py", "temporalio/bridge/_visitor.py"),
    ),
    ("sealing (AES-GCM)", ("activities/adapters/sealed_text.py", "cryptography/")),
    # (OpenTelemetry is a namespace package: py-spy names its files from below it, `trace/`, `sdk/`...)
    (
        "tracing and metrics (OpenTelemetry)",
        (
            "opentelemetry/",
            "infra/telemetry/",
            "temporalio/contrib/opentelemetry",
            "trace/",
            "util/",
            "sdk/",
            "metrics/",
            "context/",
            "instrumentation/",
            "propagators/",
            "semconv",
            "_logs/",
            "baggage/",
        ),
    ),
    ("workflow sandbox", ("temporalio/worker/workflow_sandbox/",)),
    ("Temporal SDK", ("temporalio/",)),
    ("SQL (sqlalchemy, psycopg)", ("sqlalchemy/", "psycopg")),
    ("Redis client", ("redis/",)),
    (
        "HTTP server (uvicorn, starlette, fastapi, sse)",
        ("uvicorn/", "starlette", "fastapi/", "sse_starlette/"),
    ),
    ("HTTP client (httpx, huggingface_hub)", ("httpx", "httpcore", "huggingface_hub/", "h11/", "anyio/")),
    ("embedding (torch)", ("torch/", "transformers/", "sentence_transformers/", "tokenizers/")),
    ("pydantic", ("pydantic",)),
    ("asyncio", ("asyncio/", "selectors.py", "contextvars", "threading.py", "concurrent/")),
    ("json", ("json/",)),
    (
        "Python's runtime (dataclasses, contextlib, functools...)",
        (
            "dataclasses.py",
            "contextlib.py",
            "functools.py",
            "inspect.py",
            "weakref.py",
            "uuid.py",
            "typing.py",
            "enum.py",
            "copy.py",
            "abc.py",
            "<string>",
            "<frozen",
            "_weakrefset.py",
            "types.py",
            "sniffio/",
        ),
    ),
    ("turnflow's own code", tuple(f"{part}/" for part in _OURS)),
)


def group_of(file: str) -> str:
    return next(
        (name for name, marks in GROUPS if any(file.startswith(m) or f"/{m}" in file for m in marks)), "other"
    )


# The step a sample was spent in: the innermost of these functions on its stack.
STEPS = (
    "validate_turn", "retrieve", "route_turn", "assemble_prompt", "prepare_turn", "infer", "persist_turn",
    "moderate_message", "partial_text", "current_principal", "tokens_within_limit", "start_turn",
    "_post_message", "follow", "export", "activate",
)  # fmt: skip


def summarize(path: Path, top: int = 12) -> dict[str, Any]:
    """Self time by package and by function, and inclusive time of our own modules' functions."""
    by_area, by_func, inclusive = Counter[str](), Counter[str](), Counter[str]()
    by_group, by_step = Counter[str](), Counter[str]()
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
        by_group[group_of(leaf["file"])] += n
        names = [f["func"].rsplit(".", 1)[-1] for f in frames]
        by_step[next((name for name in reversed(names) if name in STEPS), "(elsewhere)")] += n
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
        "self_by_group_pct": shares(by_group),
        "by_step_pct": shares(by_step),
        "self_by_package_pct": shares(by_area),
        "self_by_function_pct": shares(by_func),
        "ours_inclusive_pct": shares(inclusive),
    }
