"""Every benchmark, then bench/REPORT.md: `make bench` (about 45 minutes on 2 cores).

Each benchmark runs as its own process against a stack of its own; the chaos scenarios run as the
pytest tests they are (real services, started by the suite's fixtures). `--only` picks some;
the report always shows the newest result of each.

    .venv/bin/python -m bench.all
    .venv/bin/python -m bench.all --only slow-consumers chaos
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from bench import report
from bench.stack import BenchStack

PY = [sys.executable, "-m"]
PACED_LEVELS = ["--levels", "1", "8", "32", "64", "--duration", "45"]


def run(argv: list[str], env: dict[str, str] | None = None) -> None:
    print(f"\n$ {' '.join(argv[2:] if argv[:2] == PY else argv)}", file=sys.stderr, flush=True)
    subprocess.run(argv, env=env, check=True)


def on_a_stack(name: str, argv: list[str]) -> Callable[[], None]:
    """A benchmark that measures a running stack (the real model): it gets one of its own."""

    def step() -> None:
        with BenchStack(name, model="real") as stack:
            key = asyncio.run(stack.ready())
            extra = ["--api", stack.api, "--model-url", stack.model_url] if name == "ttft" else []
            run([*PY, *argv, *extra], {**stack.env, "TURNFLOW_API_KEY": key})

    return step


def chaos() -> None:
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S}"
    junit = report.RESULTS / f"chaos-{stamp}.xml"
    report.RESULTS.mkdir(exist_ok=True)
    # The outcome goes into the report, pass or fail: a failed scenario must show there.
    subprocess.run(
        [*PY, "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *report.CHAOS_TESTS]
    )


# The primary killed at 15 s and back at 35 s; then every server down from 45 s to 55 s.
FAILOVER = ["--duration", "70", "--kill-at", "15", "--restart-at", "35", "--all-down", "45", "55"]
# 256 sockets held for a minute, each user pausing like a person between turns.
WS_LEVEL = ["--levels", "256", "--duration", "60", "--think-s", "30", "--max-tokens", "16"]
STEPS: dict[str, Callable[[], None]] = {
    "chaos": chaos,
    "ttft": on_a_stack("ttft", ["bench.ttft"]),
    "load-fake": lambda: run(
        [*PY, "bench.load", "--model", "fake", "--duration", "15", "--profile", "--repeats", "3"]
    ),
    "library-floor": lambda: run([*PY, "bench.library_floor"]),
    "load-paced": lambda: run(
        [*PY, "bench.load", "--model", "fake", "--think-s", "5", "--token-ms", "25", *PACED_LEVELS]
    ),
    "load-real": lambda: run(
        [*PY, "bench.load", "--model", "real", "--levels", "1", "2", "4", "8", "--duration", "20"]
    ),
    "slow-consumers": lambda: run([*PY, "bench.slow_consumers"]),
    "ws-load": lambda: run([*PY, "bench.load", "--transport", "ws", *WS_LEVEL]),
    "response-cache": lambda: run([*PY, "bench.response_cache", "--questions", "20"]),
    "sealing": lambda: run([*PY, "bench.sealing"]),
    "rollout": lambda: run([*PY, "bench.rollout"]),
    "failover": lambda: run([*PY, "bench.failover", *FAILOVER]),
    "retrieval": on_a_stack("retrieval", ["bench.retrieval", "--rows", "20000", "--queries", "100"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", choices=list(STEPS), default=list(STEPS))
    args = parser.parse_args()
    started = time.monotonic()
    failed = []
    for name in args.only:
        print(f"\n=== {name} ===", file=sys.stderr, flush=True)
        try:
            STEPS[name]()
        except subprocess.CalledProcessError as exc:
            failed.append(name)
            print(f"{name} failed: {exc}", file=sys.stderr)
    path = report.render()
    print(f"\nwrote {path} in {(time.monotonic() - started) / 60:.0f} min", file=sys.stderr)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
