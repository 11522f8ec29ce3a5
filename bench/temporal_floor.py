"""Temporal's own latency floor on this machine: what a turn pays before its first token even if its
steps did no work at all. Measured against the stack's Temporal server with a bare worker in this
process (the SDK's defaults but for the sandbox, which the chat worker runs without: JSON converter,
no codec, no tracing), with eager workflow start, as turnflow's API starts a turn:

- ``first_activity``: start → first line of a regular activity the workflow schedules at once (the
  least any design with inference as a workflow activity pays);
- ``turn_shape``: start → first line of a regular activity after three local activities side by
  side and a fourth after them (the chat turn's shape: validate ∥ retrieve ∥ route, assemble, infer);
- ``local_shape``: the same shape with the last step a local activity too (inference in the same
  workflow task as the steps before it: no round trip to the server before the first token), and
  the two local steps after it (persist, moderate): the whole chat turn's shape;
- ``cpu``: what that shape costs in CPU with 32 turns in flight (a closed loop, as bench/load.py
  drives turnflow): this process (client and worker: the SDK's Python and its Rust core) and the
  Temporal server, per completed turn. No design of the turn as a workflow costs less.

    .venv/bin/python -m bench.temporal_floor          # against the running stack's Temporal

`bench/ttft.py` runs it first and reports its turnflow overhead against this floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

with workflow.unsafe.imports_passed_through():
    from bench.load import cpu_seconds
    from infra.config.endpoints import Endpoints
    from infra.config.policy import load_policy
    from infra.config.settings import get_settings
    from infra.eval.stats import percentile
    from infra.stack.state import read_state

_reached: dict[str, float] = {}  # workflow id → when its activity's first line ran
_STEP = timedelta(seconds=5)


@activity.defn(name="floor_step")
async def floor_step(run_id: str) -> str:
    return run_id


@activity.defn(name="floor_first_line")
async def floor_first_line(run_id: str) -> str:
    _reached[run_id] = time.perf_counter()
    return run_id


@workflow.defn(name="floor_first_activity")
class FirstActivity:
    @workflow.run
    async def run(self, run_id: str) -> str:
        return await workflow.execute_activity(floor_first_line, run_id, start_to_close_timeout=_STEP)


async def _turn_steps(run_id: str) -> None:
    """The chat turn's steps before inference: three local activities side by side, then a fourth."""
    steps = (
        workflow.execute_local_activity(floor_step, run_id, start_to_close_timeout=_STEP) for _ in range(3)
    )
    await asyncio.gather(*steps)
    await workflow.execute_local_activity(floor_step, run_id, start_to_close_timeout=_STEP)


@workflow.defn(name="floor_turn_shape")
class TurnShape:
    @workflow.run
    async def run(self, run_id: str) -> str:
        await _turn_steps(run_id)
        return await workflow.execute_activity(floor_first_line, run_id, start_to_close_timeout=_STEP)


async def _local_inference_on(run_id: str) -> str:
    reply = await workflow.execute_local_activity(floor_first_line, run_id, start_to_close_timeout=_STEP)
    for _ in range(2):  # persist, then moderate: the turn's steps after inference, local too
        await workflow.execute_local_activity(floor_step, run_id, start_to_close_timeout=_STEP)
    return reply


@workflow.defn(name="floor_local_shape")
class LocalShape:
    @workflow.run
    async def run(self, run_id: str) -> str:
        await _turn_steps(run_id)
        return await _local_inference_on(run_id)


@workflow.defn(name="floor_prepared_shape")
class PreparedShape:
    """The turn as turnflow runs it: one local step prepares it (validate, retrieve, route and assemble
    inside), then local inference, persist and moderate."""

    @workflow.run
    async def run(self, run_id: str) -> str:
        await workflow.execute_local_activity(floor_step, run_id, start_to_close_timeout=_STEP)
        return await _local_inference_on(run_id)


async def _series(client: Client, queue: str, workflow_name: str, runs: int) -> dict[str, float]:
    samples: list[float] = []
    for i in range(runs + 3):  # the first three warm the worker and the server's caches
        run_id = f"floor-{uuid.uuid4()}"
        started = time.perf_counter()
        handle = await client.start_workflow(
            workflow_name, run_id, id=run_id, task_queue=queue, request_eager_start=True
        )
        await handle.result()
        if i >= 3:
            samples.append((_reached.pop(run_id) - started) * 1000)
        await asyncio.sleep(0.2)  # one at a time, as at concurrency 1
    p50, p95 = percentile(samples, 50), percentile(samples, 95)
    assert p50 is not None and p95 is not None
    return {"p50": round(p50, 1), "p95": round(p95, 1), "n": len(samples)}


async def _cpu_series(
    client: Client,
    queue: str,
    temporal_pid: int | None,
    workflow_name: str,
    users: int = 32,
    turns: int = 640,
) -> dict[str, Any]:
    left = turns

    async def user() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            run_id = f"floor-{uuid.uuid4()}"
            await client.execute_workflow(
                workflow_name, run_id, id=run_id, task_queue=queue, request_eager_start=True
            )
            _reached.pop(run_id, None)

    await asyncio.gather(*(user() for _ in range(users)))  # warm
    left = turns
    server = {"temporal": temporal_pid} if temporal_pid else {}
    own, theirs, started = time.process_time(), cpu_seconds(server), time.perf_counter()
    await asyncio.gather(*(user() for _ in range(users)))
    elapsed = time.perf_counter() - started
    used = {"worker_and_client": time.process_time() - own}
    used |= {name: cpu_seconds(server)[name] - theirs[name] for name in server}
    return {
        "users": users,
        "turns": turns,
        "turns_per_s": round(turns / elapsed, 1),
        "cpu_ms_per_turn": {name: round(v * 1000 / turns, 1) for name, v in used.items()},
    }


async def measure(
    address: str, namespace: str = "default", runs: int = 20, temporal_pid: int | None = None
) -> dict[str, Any]:
    client = await Client.connect(address, namespace=namespace)
    queue = f"bench-floor-{uuid.uuid4()}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[FirstActivity, TurnShape, LocalShape, PreparedShape],
        activities=[floor_step, floor_first_line],
        workflow_runner=UnsandboxedWorkflowRunner(),  # as the chat worker (workers/chat.py)
    ):
        return {
            "first_activity_ms": await _series(client, queue, "floor_first_activity", runs),
            "turn_shape_ms": await _series(client, queue, "floor_turn_shape", runs),
            "local_shape_ms": await _series(client, queue, "floor_local_shape", runs),
            "prepared_shape_ms": await _series(client, queue, "floor_prepared_shape", runs),
            "cpu": await _cpu_series(client, queue, temporal_pid, "floor_local_shape"),
            "prepared_cpu": await _cpu_series(client, queue, temporal_pid, "floor_prepared_shape"),
        }


def describe(floor: dict[str, Any]) -> str:
    a, t, local = floor["first_activity_ms"], floor["turn_shape_ms"], floor["local_shape_ms"]
    text = (
        f"Temporal floor (bare worker, eager start, no work): start → first activity p50 {a['p50']} / "
        f"p95 {a['p95']} ms; through the turn's shape (3 local ∥, 1 local, activity) p50 {t['p50']} / "
        f"p95 {t['p95']} ms; the same shape all local p50 {local['p50']} / p95 {local['p95']} ms"
    )
    if cpu := floor.get("cpu"):
        parts = ", ".join(f"{name} {ms} ms" for name, ms in cpu["cpu_ms_per_turn"].items())
        text += f"; CPU per turn of that shape at {cpu['users']} in flight: {parts}"
        text += f" ({cpu['turns_per_s']} turns/s)"
    return text


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20, help="per series")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = parser.parse_args()
    settings = get_settings()
    address = Endpoints.resolve(settings).temporal_address
    state = read_state(settings.data_dir)
    temporal_pid = state.pids.get("temporal") if state else None
    floor = await measure(address, load_policy(settings.policy_file).namespace, args.runs, temporal_pid)
    print(json.dumps(floor) if args.json else describe(floor), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
    # The SDK's runtime threads can abort the interpreter's finalisation (seen here: "PyGILState_Release
    # ... must be current"); the result is out, so skip it.
    os._exit(0)
