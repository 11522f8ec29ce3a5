"""Failover under a steady request rate: one model server is killed mid-run, then restarted.

The benchmark starts its own stack (`turnflow up` in a scratch data dir, on free ports) with two real
llama.cpp servers as two registry models: `primary` (the higher-fidelity one, falling back to
`fallback`). It sends turns at a fixed rate, SIGKILLs the primary's server at --kill-at, restarts it
at --restart-at, and reports the share of turns that failed, latency before and during the outage
(p50/p95, and their ratio), and how long after the restart the primary served again (the breaker's
cool-down, then one probe). With `--all-down FROM TO` both servers are down in that window: the
tenant has a document, so those turns are answered from it (`degraded: "extractive"`,
docs/degradation.md), and the report counts them.

    .venv/bin/python -m bench.failover                  # 90 s at 1 turn/s
    .venv/bin/python -m bench.failover --duration 40 --kill-at 10 --restart-at 20
    .venv/bin/python -m bench.failover --duration 70 --kill-at 15 --restart-at 35 --all-down 42 52
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.stack import BenchStack, free_port, wait_http
from infra.config.endpoints import default_gguf
from infra.config.settings import REPO_ROOT
from infra.stack.components.model import model_component

RESULTS = Path(__file__).parent / "results"
PROMPT = "Name a colour."
# What the tenant's documents say, for the turns no model can answer.
GUIDE = (
    "Red, green and blue are the primary colours of light. A colour wheel puts red opposite cyan. "
    "Painters name a colour by its hue, its saturation and its lightness."
)


@dataclass
class Turn:
    started_s: float  # since the run began
    latency_ms: float
    outcome: str  # done | error | http_<status> | exception
    model: str | None
    resets: int
    degraded: str | None = None  # "extractive": answered from the documents, no model


def start_model(port: int, alias: str, log: Path) -> subprocess.Popen[bytes]:
    argv = model_component(port, model_path=None, alias=alias, context=2048, threads=1).argv
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def policy_file(primary: str, fallback: str, directory: Path) -> Path:
    data = yaml.safe_load((REPO_ROOT / "temporal.yaml").read_text())
    # Both servers run the embedded SmolLM2 file: prompts are counted with it.
    base = {**data["models"]["smollm2-135m-instruct-q4_1"], "tokenizer": str(default_gguf())}
    data["models"] = {
        "primary": {
            **base,
            "endpoints": [primary],
            "tier": "gpu",
            "fidelity": 10,
            "fallback": ["fallback"],
        },
        "fallback": {**base, "endpoints": [fallback], "fidelity": 1},
    }
    path = directory / "temporal.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def one_turn(http: httpx.AsyncClient, t0: float) -> Turn:
    # A new conversation each time: every turn's prompt is the same size, early or late in the run.
    conv = (await http.post("/v1/conversations", json={"title": "failover"})).json()["id"]
    started = time.monotonic()
    outcome, model, resets, degraded = "exception", None, 0, None
    try:
        async with http.stream(
            "POST", f"/v1/conversations/{conv}/messages", json={"content": PROMPT, "max_tokens": 8}
        ) as resp:
            if resp.status_code != 200:
                outcome = f"http_{resp.status_code}"
            else:
                event = None
                async for line in resp.aiter_lines():
                    if line.startswith("event:"):
                        event = line.split(":", 1)[1].strip()
                        resets += event == "reset"
                    elif line.startswith("data:") and event in ("done", "error"):
                        outcome, data = event, json.loads(line[5:])
                        model = data.get("model")
                        degraded = data.get("degraded") if isinstance(data.get("degraded"), str) else None
                        break
    except httpx.HTTPError:
        outcome = "exception"
    return Turn(started - t0, (time.monotonic() - started) * 1000, outcome, model, resets, degraded)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run(args: argparse.Namespace) -> dict[str, Any]:
    ports = {k: free_port() for k in ("primary", "fallback")}
    primary_url, fallback_url = (f"http://127.0.0.1:{ports[k]}" for k in ("primary", "fallback"))
    stack = BenchStack("failover", model=None)
    policy = policy_file(primary_url, fallback_url, stack.scratch)
    stack.env |= {"TURNFLOW_POLICY_FILE": str(policy), "TURNFLOW_TGI_URL": fallback_url}
    primary = start_model(ports["primary"], "primary", stack.scratch / "primary.log")
    fallback = start_model(ports["fallback"], "fallback", stack.scratch / "fallback.log")
    with stack:

        async def ready_then_drive() -> dict[str, Any]:
            await wait_http(f"{primary_url}/v1/models")
            await wait_http(f"{fallback_url}/v1/models")
            key = await stack.ready()
            servers = {"primary": primary, "fallback": fallback}
            return await drive(args, stack.api, key, servers, ports, stack.scratch)

        try:
            return asyncio.run(ready_then_drive())
        finally:
            for proc in (primary, fallback):  # the first ones (drive stops those it started)
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=30)


async def drive(
    args: argparse.Namespace,
    api: str,
    key: str,
    servers: dict[str, subprocess.Popen[bytes]],
    ports: dict[str, int],
    scratch: Path,
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    # The scenario, in order: (when, what, which servers).
    plan = [(args.kill_at, "kill", ["primary"]), (args.restart_at, "start", ["primary"])]
    if args.all_down:
        plan += [
            (args.all_down[0], "kill", ["primary", "fallback"]),
            (args.all_down[1], "start", ["primary", "fallback"]),
        ]
    plan.sort(key=lambda step: step[0])
    marks: dict[str, float] = {}
    async with httpx.AsyncClient(
        base_url=api, headers=headers, timeout=httpx.Timeout(120, connect=5)
    ) as http:
        doc = await http.post(
            "/v1/documents", json={"text": GUIDE, "source": "colours.txt", "title": "Colours"}
        )
        doc.raise_for_status()
        for _ in range(2):  # warm-up, not measured
            await one_turn(http, time.monotonic())
        t0 = time.monotonic()
        tasks: list[asyncio.Task[Turn]] = []
        i = 0
        while (now := time.monotonic() - t0) < args.duration:
            while plan and now >= plan[0][0]:
                _, action, names = plan.pop(0)
                for name in names:
                    proc = servers[name]
                    if action == "kill" and proc.poll() is None:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                    elif action == "start" and proc.poll() is not None:
                        servers[name] = start_model(ports[name], name, scratch / f"{name}.log")
                marks.setdefault(f"{action} {'+'.join(names)}", round(now, 1))
                print(f"{now:5.1f}s  {action} {', '.join(names)}", file=sys.stderr)
            tasks.append(asyncio.create_task(one_turn(http, t0)))
            i += 1
            await asyncio.sleep(max(0.0, i / args.rate - (time.monotonic() - t0)))
        turns = list(await asyncio.gather(*tasks))
    for proc in servers.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    return report(args, turns, marks)


def report(args: argparse.Namespace, turns: list[Turn], marks: dict[str, float]) -> dict[str, Any]:
    killed, restarted = marks.get("kill primary", 0.0), marks.get("start primary", 0.0)
    down_from, down_to = args.all_down or (args.duration, args.duration)
    back = next(
        (
            t.started_s
            for t in turns
            if t.started_s >= restarted and t.model == "primary" and t.outcome == "done"
        ),
        None,
    )
    normal = [t.latency_ms for t in turns if t.started_s < killed and t.outcome == "done"]
    # The primary's outage, up to its return (and before any window with every server down).
    outage = [t.latency_ms for t in turns if killed <= t.started_s < min(back or args.duration, down_from)]
    failed = [t for t in turns if t.outcome != "done"]
    # With every server down: answered from the documents, or failed.
    all_down = [t for t in turns if down_from <= t.started_s < down_to]
    p95_normal, p95_outage = pct(normal, 95), pct(outage, 95)
    return {
        "bench": "failover",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "rate_per_s": args.rate,
        "duration_s": args.duration,
        "killed_at_s": round(killed, 1),
        "restarted_at_s": round(restarted, 1),
        "turns": len(turns),
        "failed": len(failed),
        "failed_share": round(len(failed) / max(len(turns), 1), 4),
        "failures": sorted({t.outcome for t in failed}),
        "served_by": {m: sum(1 for t in turns if t.model == m) for m in ("primary", "fallback")},
        "turns_with_reset": sum(1 for t in turns if t.resets),
        "answered_from_sources": sum(1 for t in turns if t.degraded == "extractive"),
        "all_down": {
            "from_s": down_from if args.all_down else None,
            "to_s": down_to if args.all_down else None,
            "turns": len(all_down),
            "answered_from_sources": sum(1 for t in all_down if t.degraded == "extractive"),
            "failed": sum(1 for t in all_down if t.outcome != "done"),
        },
        "marks_s": marks,
        "normal_ms": {"n": len(normal), "p50": pct(normal, 50), "p95": p95_normal},
        "outage_ms": {"n": len(outage), "p50": pct(outage, 50), "p95": p95_outage},
        "p95_outage_over_normal": round(p95_outage / p95_normal, 2) if p95_normal and p95_outage else None,
        "recovered_after_restart_s": round(back - restarted, 1) if back is not None else None,
        "timeline": [asdict(t) for t in turns],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rate", type=float, default=1.0, help="turns started per second (within one CPU model's capacity)"
    )
    parser.add_argument("--duration", type=float, default=90.0, help="seconds of traffic")
    parser.add_argument("--kill-at", type=float, default=25.0)
    parser.add_argument("--restart-at", type=float, default=50.0)
    parser.add_argument(
        "--all-down",
        type=float,
        nargs=2,
        metavar=("FROM", "TO"),
        help="both servers down in this window (the tenant's document answers)",
    )
    args = parser.parse_args()
    result = run(args)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"failover-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2))
    summary = {k: v for k, v in result.items() if k != "timeline"}
    print(json.dumps(summary, indent=2))
    print(f"written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
