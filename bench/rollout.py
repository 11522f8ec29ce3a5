"""A rolling deploy rehearsed under load: does shipping a build lose, duplicate or mix anything?

A scratch stack of its own (Temporal, Postgres, Redis, the FAKE fast model) and turnflow's processes
started by this script: 2 API processes (each with its eager chat worker) and 2 workers, all build A,
carrying steady multi-turn SSE traffic (clients spread over the two APIs; a stream asked to reconnect,
or cut, resumes on the other with Last-Event-ID). Then, as an operator would:

1. start 2 workers of build B and wait until they poll;
2. ramp B to 50% (`turnflow deploy promote B --ramp 50`), then make it current;
3. SIGTERM the A workers one at a time (each drains: finishes what it holds, then exits);
4. restart each API process on build B, one at a time (SIGTERM: it sends its streams elsewhere);
5. roll back to A: A workers again, `turnflow deploy rollback`.

Reported: turns started / completed / failed; lost or duplicated replies (Postgres: exactly one
assistant message per accepted user message; a client that saw an event twice); turns whose workflow
tasks ran on two builds (pinned: must be 0); TTFT p50/p95 before, during and after; each drain's time.

    .venv/bin/python -m bench.rollout
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.stack import free_port, wait_http
from infra.eval.sse_client import Event, events
from infra.eval.stats import percentile

RESULTS = Path(__file__).parent / "results"
QUESTIONS = ["Why is the sea salty?", "Name a planet.", "What is a lighthouse for?", "Say hello."]


@dataclass
class Turn:
    started: float
    api: int
    turn_id: str | None = None
    ttft_ms: float | None = None
    outcome: str = "open"  # done, error, refused, lost
    resumed: int = 0
    duplicate_events: int = 0


@dataclass
class Rehearsal:
    scratch: Path
    env: dict[str, str]
    apis: list[str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    phases: list[tuple[str, float]] = field(default_factory=list)
    steps: list[tuple[str, float]] = field(default_factory=list)  # phases and the operator's steps
    said: list[str] = field(default_factory=list)  # what the operator's commands printed
    drains: list[dict[str, Any]] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)

    def phase(self, name: str) -> None:
        self.step(name)
        self.phases.append((name, time.monotonic()))

    def step(self, name: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {name}", file=sys.stderr, flush=True)
        self.steps.append((name, time.monotonic()))

    def start(self, name: str, build: str, argv: list[str], **env: str) -> None:
        log = (self.scratch / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", *argv],
            env={**self.env, "TURNFLOW_BUILD_ID": build, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def start_api(self, index: int, build: str) -> None:
        port = self.apis[index].rsplit(":", 1)[1]
        argv = ["uvicorn", "api.main:create_app", "--factory", "--port", port, "--no-access-log"]
        self.start(f"api-{index}", build, argv)

    def start_worker(self, name: str, build: str, *, promote: bool = False) -> None:
        self.start(name, build, ["workers.main"], TURNFLOW_PROMOTE_ON_START=str(promote).lower())

    async def stop(self, name: str) -> float:
        """SIGTERM, then the seconds until it exited (its drain)."""
        self.step(f"SIGTERM {name}")
        proc = self.processes.pop(name)
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 120)
        took = time.monotonic() - began
        self.drains.append({"process": name, "seconds": round(took, 2), "exit": proc.returncode})
        return took

    async def cli(self, *args: str) -> str:
        """A `turnflow` command, as an operator runs it (in a thread: the users keep going meanwhile)."""
        argv = [sys.executable, "-m", "infra.cli.main", *args]
        done = await asyncio.to_thread(subprocess.run, argv, env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"turnflow {' '.join(args)}: {done.stdout}{done.stderr}")
        self.step(f"turnflow {' '.join(args)} done")
        self.said.append(done.stdout)
        return done.stdout


def start_fake_model(port: int, log: Path) -> subprocess.Popen[bytes]:
    """The FAKE fast model (bench/fast_fake_model.py): a token every 5 ms, the platform's own cost."""
    argv = [sys.executable, "-m", "bench.fast_fake_model", "--port", str(port), "--token-ms", "5"]
    return subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT)


async def wait_polled(r: Rehearsal, build: str, workers: list[str]) -> None:
    """Until these worker processes poll every kind's queue (Temporal names a worker `pid@host`)."""
    from infra.config.policy import load_policy
    from infra.runtime.deployments import wait_until_polled
    from infra.runtime.temporal_client import connect_temporal

    policy = load_policy(Path(r.env["TURNFLOW_POLICY_FILE"]))
    client = await connect_temporal(r.env["TURNFLOW_TEMPORAL_ADDRESS"], policy.namespace)
    identities = {f"{r.processes[name].pid}@{socket.gethostname()}" for name in workers}
    for kind in ("chat", "batch", "ingest"):
        deployment = f"{r.env['TURNFLOW_DEPLOYMENT_NAME']}-{kind}"
        await wait_until_polled(client, deployment, build, [policy.queue(kind)], 120, identities)


async def start_polling(r: Rehearsal, build: str, workers: list[str]) -> None:
    """Start these workers of the build and wait until each polls, as an operator would before routing."""
    for name in workers:
        r.start_worker(name, build)
    await wait_polled(r, build, workers)


async def user(r: Rehearsal, key: str, stop: asyncio.Event, rng: random.Random) -> None:
    """One person: a conversation on one API, a turn after another, a pause between."""
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        home = rng.randrange(len(r.apis))
        conv = (await http.post(f"{r.apis[home]}/v1/conversations", json={})).json()["id"]
        while not stop.is_set():
            await one_turn(r, http, conv, home, rng.choice(QUESTIONS))
            home = (home + 1) % len(r.apis)  # spread, as a load balancer would
            await asyncio.sleep(rng.expovariate(1 / 0.6))


async def one_turn(r: Rehearsal, http: httpx.AsyncClient, conv: str, home: int, text: str) -> None:
    turn = Turn(started=time.monotonic(), api=home)
    r.turns.append(turn)
    seen: list[Event] = []
    body = {"content": text, "max_tokens": 24}
    api = home
    for _attempt in range(6):
        try:
            if turn.turn_id is None:
                request = http.stream("POST", f"{r.apis[api]}/v1/conversations/{conv}/messages", json=body)
            else:
                last = next((e.id for e in reversed(seen) if e.id), None)
                headers = {"Last-Event-ID": last} if last else {}
                request = http.stream("GET", f"{r.apis[api]}/v1/turns/{turn.turn_id}/events", headers=headers)
            async with request as resp:
                if resp.status_code == 503:  # that API is leaving, or overloaded: the other one
                    api = (api + 1) % len(r.apis)
                    await asyncio.sleep(0.2)
                    continue
                if resp.status_code != 200:
                    turn.outcome = "refused"
                    return
                turn.turn_id = turn.turn_id or resp.headers.get("x-turn-id")
                async for event in events(resp):
                    if event.id and any(e.id == event.id for e in seen):
                        turn.duplicate_events += 1
                    seen.append(event)
                    if event.event == "token" and turn.ttft_ms is None:
                        turn.ttft_ms = (time.monotonic() - turn.started) * 1000
                    if event.event in ("done", "error"):
                        turn.outcome = event.event
                        return
        except httpx.HTTPError:
            pass  # the process went away mid-stream: resume elsewhere
        turn.resumed += 1
        api = (api + 1) % len(r.apis)
        await asyncio.sleep(0.2)
    turn.outcome = "lost"


def check_postgres(database_url: str, turns: list[Turn]) -> dict[str, int]:
    """Each accepted turn: exactly one question and one reply recorded."""
    from infra.config.endpoints import libpq_url

    ids = [t.turn_id for t in turns if t.turn_id]
    with psycopg.connect(libpq_url(database_url)) as conn:
        rows = conn.execute(
            "SELECT turn_id, role, count(*) FROM messages WHERE turn_id = ANY(%s) GROUP BY turn_id, role",
            (ids,),
        ).fetchall()
    counts = {(t, role): n for t, role, n in rows}
    return {
        "accepted": len(ids),
        "missing_reply": sum(counts.get((t, "assistant"), 0) == 0 for t in ids),
        "duplicated_reply": sum(counts.get((t, "assistant"), 0) > 1 for t in ids),
    }


async def mixed_builds(
    env: dict[str, str], turns: list[Turn], slow_ms: float = 2000
) -> tuple[int, dict[str, int], list[dict[str, Any]]]:
    """Turns whose workflow tasks were completed by workers of more than one build, turns per build, and
    the histories of slow turns (event, seconds after the start, build) to see where they waited."""
    from temporalio.api.enums.v1 import EventType

    from infra.config.policy import load_policy
    from infra.runtime.temporal_client import connect_temporal

    policy = load_policy(Path(env["TURNFLOW_POLICY_FILE"]))
    client = await connect_temporal(env["TURNFLOW_TEMPORAL_ADDRESS"], policy.namespace)
    mixed, per_build, slow = 0, dict[str, int](), list[dict[str, Any]]()
    for turn in turns:
        if not turn.turn_id:
            continue
        history = await client.get_workflow_handle(turn.turn_id).fetch_history()
        if (turn.ttft_ms or 0) > slow_ms:
            first = history.events[0].event_time.ToDatetime()
            slow.append(
                {
                    "turn": turn.turn_id,
                    "ttft_ms": round(turn.ttft_ms or 0),
                    "events": [
                        [
                            round((e.event_time.ToDatetime() - first).total_seconds(), 3),
                            EventType.Name(e.event_type).removeprefix("EVENT_TYPE_"),
                        ]
                        for e in history.events
                    ],
                }
            )
        builds = {
            e.workflow_task_completed_event_attributes.deployment_version.build_id
            for e in history.events
            if e.HasField("workflow_task_completed_event_attributes")
        } - {""}
        mixed += len(builds) > 1
        for build in builds:
            per_build[build] = per_build.get(build, 0) + 1
    return mixed, per_build, slow


def ttft(turns: list[Turn], start: float, end: float) -> dict[str, float | None]:
    values = [t.ttft_ms for t in turns if start <= t.started < end and t.ttft_ms is not None]
    return {"turns": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95)}


async def rehearse(args: argparse.Namespace) -> dict[str, Any]:
    from db.access import ensure_demo_key
    from db.engine import make_engine, make_sessionmaker
    from db.migrate import upgrade_async
    from infra.config.policy import load_policy
    from infra.config.settings import Settings
    from infra.stack.embedded import build_stack
    from infra.stack.supervisor import Supervisor

    scratch = Path(tempfile.mkdtemp(prefix="turnflow-rollout-"))
    ports = {k: free_port() for k in ("temporal", "ui", "postgres", "redis", "model", "api0", "api1")}
    deployment = f"rollout-{uuid.uuid4().hex[:6]}"
    base = {
        "TURNFLOW_DATA_DIR": str(scratch / "data"),
        "TURNFLOW_TEMPORAL_PORT": str(ports["temporal"]),
        "TURNFLOW_TEMPORAL_UI_PORT": str(ports["ui"]),
        "TURNFLOW_POSTGRES_PORT": str(ports["postgres"]),
        "TURNFLOW_REDIS_PORT": str(ports["redis"]),
        "TURNFLOW_TGI_URL": f"http://127.0.0.1:{ports['model']}",
        # Several workers on one machine: no metrics ports to share out (nor tracing's cost).
        "TURNFLOW_TELEMETRY": "false",
        "TURNFLOW_DEPLOYMENT_NAME": deployment,
        "TURNFLOW_RATE_LIMIT_REQUESTS_PER_MIN": "100000000",
        "TURNFLOW_RATE_LIMIT_TOKENS_PER_MIN": "100000000000",
    }
    os.environ.update(base)
    from infra.config.endpoints import default_gguf

    os.environ["TURNFLOW_MODEL_PATH"] = str(default_gguf())
    settings = Settings()
    policy = load_policy(settings.policy_file)
    endpoints, components = build_stack(settings, policy)
    infra = [c for c in components if c.name not in ("worker", "api")]
    model = start_fake_model(ports["model"], scratch / "fake-model.log")
    supervisor = Supervisor(scratch / "logs")
    env = {
        **os.environ,
        **endpoints.as_env(),
        "TURNFLOW_POLICY_FILE": str(settings.policy_file),
        "PYTHONUNBUFFERED": "1",
    }
    r = Rehearsal(scratch, env, [f"http://127.0.0.1:{ports['api0']}", f"http://127.0.0.1:{ports['api1']}"])
    try:
        await supervisor.start(infra)
        await upgrade_async(endpoints.database_url)
        engine = make_engine(endpoints.database_url, role=settings.database_role or None)
        key = await ensure_demo_key(make_sessionmaker(engine), settings)
        await engine.dispose()

        build_a, build_b = f"{deployment}-a", f"{deployment}-b"
        r.start_worker("worker-a1", build_a, promote=True)
        r.start_worker("worker-a2", build_a)
        for i in range(2):
            r.start_api(i, build_a)
        await asyncio.gather(*(wait_http(f"{api}/livez") for api in r.apis))
        await wait_polled(r, build_a, ["worker-a1", "worker-a2"])
        await asyncio.sleep(3)  # the first worker has made A current

        stop, rng = asyncio.Event(), random.Random(7)
        users = [asyncio.create_task(user(r, key, stop, rng)) for _ in range(args.users)]
        r.phase("before")
        await asyncio.sleep(args.steady_s)

        r.phase("during")
        await start_polling(r, build_b, ["worker-b1", "worker-b2"])
        r.step("ramp B 50%")
        await r.cli("deploy", "promote", build_b, "--ramp", "50")
        await asyncio.sleep(args.step_s)
        r.step("promote B")
        await r.cli("deploy", "promote", build_b)
        await asyncio.sleep(args.step_s)
        for name in ("worker-a1", "worker-a2"):
            await r.stop(name)
            await asyncio.sleep(args.step_s / 2)
        for i in range(2):
            await r.stop(f"api-{i}")
            r.start_api(i, build_b)
            await wait_http(f"{r.apis[i]}/livez")
            await asyncio.sleep(args.step_s / 2)

        r.phase("after")
        await asyncio.sleep(args.steady_s)

        r.phase("rollback")
        await start_polling(r, build_a, ["worker-a3", "worker-a4"])
        r.step("rollback command")
        await r.cli("deploy", "rollback")
        await asyncio.sleep(args.steady_s)
        r.phase("end")
        stop.set()
        await asyncio.gather(*users)
        await asyncio.sleep(2)  # the last replies are recorded

        marks = dict(r.phases)
        started, completed = len(r.turns), sum(t.outcome == "done" for t in r.turns)
        mixed, per_build, slow = await mixed_builds(env, r.turns)
        return {
            "benchmark": "rollout",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "users": args.users,
            "seconds": round(marks["end"] - marks["before"], 1),
            "turns": {
                "started": started,
                "completed": completed,
                "failed": sum(t.outcome in ("error", "refused") for t in r.turns),
                "lost": sum(t.outcome in ("lost", "open") for t in r.turns),
                "resumed_streams": sum(t.resumed for t in r.turns),
                "duplicate_events": sum(t.duplicate_events for t in r.turns),
                "turns_per_s": round(started / (marks["end"] - marks["before"]), 2),
            },
            "postgres": check_postgres(endpoints.database_url, r.turns),
            "mixed_build_turns": mixed,
            "turns_per_build": per_build,
            "ttft_ms": {
                "before": ttft(r.turns, marks["before"], marks["during"]),
                "during": ttft(r.turns, marks["during"], marks["after"]),
                "after": ttft(r.turns, marks["after"], marks["rollback"]),
                "rollback": ttft(r.turns, marks["rollback"], marks["end"]),
            },
            "drains": r.drains,
            "slow_turns": slow,
            "operator_saw": r.said,
            "steps_s": [[name, round(at - marks["before"], 2)] for name, at in r.steps],
            # Each turn on the run's clock, to see where a slow one fell among the operator's steps.
            "timeline": [
                {
                    "t": round(t.started - marks["before"], 2),
                    "api": t.api,
                    "ttft_ms": t.ttft_ms and round(t.ttft_ms),
                    "outcome": t.outcome,
                    "resumed": t.resumed,
                }
                for t in r.turns
            ],
        }
    finally:
        for name in list(r.processes):
            r.processes[name].send_signal(signal.SIGTERM)
        for proc in r.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
        model.terminate()
        await supervisor.stop()
        shutil.rmtree(scratch / "data", ignore_errors=True)  # no scratch data left behind; logs stay


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=5, help="concurrent conversations (~5 turns/s at 5)")
    parser.add_argument(
        "--steady-s", type=float, default=20, help="seconds before, after, and after rollback"
    )
    parser.add_argument("--step-s", type=float, default=10, help="seconds between the operator's steps")
    result = asyncio.run(rehearse(parser.parse_args()))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"rollout-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
