"""Load: N concurrent users, each holding multi-turn conversations with retrieval, for a fixed time,
at rising N; SSE users (`POST` then the event stream), or with `--transport ws` WebSocket users, each
holding one socket on `/v1/ws` for the whole level (bench/ws_users.py). Reports throughput, TTFT and
end-to-end latency p50/p95/p99, errors by type, and the peak memory of every stack process; writes
the curve as JSON and a PNG plot.

The benchmark starts its own stack (`turnflow up` in a scratch dir, on free ports). `--model fake` serves
turns from bench/fast_fake_model.py (a FAKE, fast, fixed-pace server: the platform's own cost);
`--model real` from the embedded llama.cpp server (the real figure on this machine).

    .venv/bin/python -m bench.load --model fake                       # 1, 8, 32, 128, 256 users
    .venv/bin/python -m bench.load --model real --levels 1 4 8 --duration 30
    .venv/bin/python -m bench.load --transport ws --levels 256 --duration 60 --think-s 30 --max-tokens 16

By default users send their next turn as soon as a reply ends: a capacity test, where from the
saturation point on, turns queue. `--think-s S` gives them a mean pause of S seconds (exponential)
before each turn, as people reading and typing take, and `--token-ms` paces the fake model like a
real one: the platform's cost at a given number of concurrent conversations, short of saturation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import profiling, ws_users
from bench.plotting import pyplot, save
from bench.stack import BenchStack
from infra.eval.stats import percentile
from infra.eval.synth import Synth
from infra.stack.state import read_state

RESULTS = Path(__file__).parent / "results"
PROFILED = ("api", "worker")  # the stack's Python processes (Temporal is Go; Postgres, Redis are C)


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(roots: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system) of each named process and all its descendants (Postgres backends)."""
    ticks = os.sysconf("SC_CLK_TCK")
    parent, used = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parent[pid] = int(fields[1])
        used[pid] = (int(fields[11]) + int(fields[12])) / ticks

    def tree(root: int) -> float:
        total, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            total += used.get(pid, 0.0)
            todo.extend(child for child, ppid in parent.items() if ppid == pid)
        return total

    return {name: tree(pid) for name, pid in roots.items()}


async def watch_memory(data_dir: Path, peaks: dict[str, float], stop: asyncio.Event) -> None:
    """Each stack process's peak resident memory, sampled every half second."""
    while not stop.is_set():
        state = read_state(data_dir)
        for name, pid in (state.pids if state else {}).items():
            if (mb := rss_mb(pid)) is not None:
                peaks[name] = max(peaks.get(name, 0.0), mb)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def level(
    api: str, key: str, users: int, args: argparse.Namespace, data_dir: Path, model_pid: int | None = None
) -> dict[str, Any]:
    traffic = Synth(
        api, key, max_tokens=args.max_tokens, max_in_flight=users, seed=users, think_s=args.think_s
    )
    sockets = ws_users.Tally()
    peaks: dict[str, float] = {}
    stop = asyncio.Event()
    memory = asyncio.create_task(watch_memory(data_dir, peaks, stop))
    state = read_state(data_dir)
    processes = {**(state.pids if state else {}), **({"model": model_pid} if model_pid else {})}
    cpu_before, own_before = cpu_seconds(processes), time.process_time()
    # py-spy on the Python processes for the level (`--profile`): where their CPU goes.
    profiles = args.profile_dir or data_dir.parent  # kept only where asked, else gone with the stack
    spies = {
        name: profiling.start(pid, profiles / f"profile-{users}-{name}.txt")
        for name, pid in processes.items()
        if args.profile and name in PROFILED
    }
    started = time.monotonic()
    deadline = started + args.duration

    async def user() -> None:
        while time.monotonic() < deadline:
            await traffic.conversation()

    try:
        if args.transport == "ws":
            await asyncio.gather(
                *(ws_users.user(api, key, args, deadline, sockets, seed) for seed in range(users))
            )
        else:
            await asyncio.gather(*(user() for _ in range(users)))
    finally:
        elapsed = time.monotonic() - started
        for spy in spies.values():
            await asyncio.to_thread(profiling.stop, spy)
        stop.set()
        await memory
        await traffic.aclose()
    t = traffic.tally if args.transport == "sse" else sockets
    cpu = cpu_seconds(processes)
    # (A child that exited meanwhile takes its time with it: never below zero.)
    cpu_used = {name: max(0.0, cpu[name] - cpu_before.get(name, 0.0)) for name in cpu}
    cpu_used["load generator"] = time.process_time() - own_before

    def pcts(values: list[float]) -> dict[str, float | None]:
        return {f"p{p}": None if (v := percentile(values, p)) is None else round(v, 1) for p in (50, 95, 99)}

    return {
        "users": users,
        **({"most_held_at_once": sockets.most_held} if args.transport == "ws" else {}),
        "seconds": round(elapsed, 1),
        "turns": t.started,
        "completed": t.completed,
        "throughput_turns_per_s": round(t.completed / elapsed, 2),
        "ttft_ms": pcts(t.ttft_ms),
        "total_ms": pcts(t.total_ms),
        "errors": dict(t.errors),
        "peak_rss_mb": {k: round(v, 1) for k, v in sorted(peaks.items())},
        # Where the two cores went: CPU seconds per completed turn, by process (and its children).
        "cpu_ms_per_turn": {k: round(v * 1000 / max(t.completed, 1), 1) for k, v in sorted(cpu_used.items())},
        **(
            {"profile": {n: profiling.summarize(profiles / f"profile-{users}-{n}.txt") for n in spies}}
            if spies
            else {}
        ),
    }


PLATFORM = ("api", "worker", "temporal", "postgres", "redis")  # what a turn costs turnflow, not its peers


def platform_cpu(level: dict[str, Any]) -> float:
    return sum(level.get("cpu_ms_per_turn", {}).get(p, 0) for p in PLATFORM)


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The level's row: its run of median platform CPU per turn (runs on this shared machine differ by
    up to a fifth), with every run's throughput and CPU kept beside it."""
    ranked = sorted(runs, key=platform_cpu)
    row = dict(ranked[len(ranked) // 2])
    if len(runs) > 1:
        row["runs"] = [
            {
                "throughput_turns_per_s": r["throughput_turns_per_s"],
                "platform_cpu_ms_per_turn": round(platform_cpu(r), 1),
                "ttft_p50_ms": r["ttft_ms"]["p50"],
            }
            for r in runs
        ]
    return row


def plot(result: dict[str, Any], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    rows = result["levels"]
    users = [r["users"] for r in rows]
    fig, (lat, thr) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("ttft_ms", "TTFT"), ("total_ms", "end to end")):
        for p, style in (("p50", "-o"), ("p95", "--o")):
            lat.plot(users, [r[key][p] for r in rows], style, label=f"{label} {p}")
    lat.set(xscale="log", yscale="log", xlabel="concurrent users", ylabel="ms", title="latency")
    lat.legend()
    thr.plot(users, [r["throughput_turns_per_s"] for r in rows], "-o", label="completed turns/s")
    thr.plot(users, [sum(r["errors"].values()) for r in rows], "-x", label="errors")
    thr.set(xscale="log", xlabel="concurrent users", title="throughput and errors")
    thr.legend()
    think = f", users pause {result['think_s']:g} s" if result.get("think_s") else ""
    fig.suptitle(f"turnflow load, {result['model']} model{think}, {result['date'][:10]}")
    save(fig, path)
    return True


def run(args: argparse.Namespace) -> dict[str, Any]:
    # The fake model streams as many tokens as a turn asks for (its own default is 32).
    fake = ("--token-ms", str(args.token_ms), "--tokens", str(args.max_tokens))
    with BenchStack("load", model=args.model, fake_args=fake) as stack:

        async def drive() -> list[dict[str, Any]]:
            key = await stack.ready()
            warm = Synth(stack.api, key, max_tokens=args.max_tokens, max_in_flight=1, seed=0)
            await warm.ingest_corpus()  # the retrieval corpus, and a first turn or two: not measured
            await warm.conversation()
            await warm.aclose()
            rows = []
            for users in args.levels:
                runs = []
                for _ in range(args.repeats):
                    runs.append(await level(stack.api, key, users, args, stack.data_dir, stack.model_pid))
                    print(json.dumps(runs[-1]), file=sys.stderr)
                rows.append(median_run(runs))
            return rows

        rows = asyncio.run(drive())
    by_users = {r["users"]: r for r in rows}
    ratio = None
    if 1 in by_users and 32 in by_users and by_users[1]["ttft_ms"]["p50"]:
        ratio = round(by_users[32]["ttft_ms"]["p50"] / by_users[1]["ttft_ms"]["p50"], 2)
    return {
        "benchmark": "load",
        "transport": args.transport,
        "model": args.model,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "duration_s_per_level": args.duration,
        "max_tokens": args.max_tokens,
        "think_s": args.think_s,
        "fake_token_ms": args.token_ms if args.model == "fake" else None,
        "levels": rows,
        "ttft_p50_ratio_32_over_1": ratio,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=("fake", "real"), default="fake")
    parser.add_argument(
        "--transport", choices=("sse", "ws"), default="sse", help="users on SSE, or each on one WebSocket"
    )
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32, 128, 256])
    parser.add_argument("--duration", type=float, default=30, help="seconds of arrivals per level")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--think-s", type=float, default=0.0, help="users' mean pause before a turn")
    parser.add_argument("--token-ms", type=float, default=5.0, help="the fake model's pace per token")
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per level; its row is the run of median CPU per turn"
    )
    parser.add_argument(
        "--profile", action="store_true", help="sample the API and worker with py-spy at each level"
    )
    parser.add_argument(
        "--profile-dir",
        type=Path,
        help="keep py-spy's raw stacks (profile-USERS-PROCESS.txt) here, to read whole stacks",
    )
    args = parser.parse_args()
    result = run(args)
    RESULTS.mkdir(exist_ok=True)
    paced = f"-think{args.think_s:g}s" if args.think_s else ""
    kind = "ws-load" if args.transport == "ws" else f"load-{args.model}{paced}"
    stem = RESULTS / f"{kind}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    print(f"wrote {stem.with_suffix('.json')}")
    if plot(result, stem.with_suffix(".png")):
        print(f"wrote {stem.with_suffix('.png')}")
    for r in result["levels"]:
        print(
            f"{r['users']:>4} users  {r['throughput_turns_per_s']:>6} turns/s  "
            f"TTFT p50/p95/p99 {r['ttft_ms']['p50']}/{r['ttft_ms']['p95']}/{r['ttft_ms']['p99']} ms  "
            f"e2e p50/p95 {r['total_ms']['p50']}/{r['total_ms']['p95']} ms  errors {r['errors'] or 0}"
        )
    print(f"TTFT p50 at 32 users over 1 user: {result['ttft_p50_ratio_32_over_1']}")


if __name__ == "__main__":
    main()
