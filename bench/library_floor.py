"""The floor under a turn's CPU: what the libraries turnflow is built on cost for the least work one chat
turn asks of them, with none of turnflow's own code, at 32 turns in flight (as `bench/load.py` drives
turnflow). Measured on a stack of its own (`BenchStack`, FAKE fast model) so every peer is the real one:

- ``http_sse``: one POST through uvicorn + FastAPI, answered with sse-starlette's EventSourceResponse
  of 34 events (`turn`, 32 tokens, `done`) from memory; the server is a process of its own, and its CPU
  is what is counted (not the client's);
- ``redis_stream``: the same 34 events through a Redis Stream with redis-py: one XADD per event by a
  publisher, one blocking XREAD loop by a follower (this process and the Redis server);
- ``model_client``: one streamed chat completion of 32 tokens through huggingface_hub's
  AsyncInferenceClient from the FAKE model server (the client's CPU; the server's is not counted);
- ``sql``: SQLAlchemy async on psycopg with a pre-ping pool, as turnflow's engine: a SELECT by key, a
  two-row INSERT and a one-row INSERT, each its own transaction (this process and Postgres), in a
  scratch table dropped afterwards;
- ``temporal``: the turn's workflow shape with steps that do nothing (bench/temporal_floor.py: one
  local step, local inference, persist, moderate), the SDK's Python and core and the Temporal server.

The sum is a floor, not an estimate: turnflow does all of this for every turn and more besides
(auth, limits, admission, validation, retrieval, the prompt, the payload codec and sealing, traces,
metrics, audit). `bench/REPORT.md` sets it beside the measured CPU per turn.

    .venv/bin/python -m bench.library_floor            # writes bench/results/library-floor-*.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import BaseModel

from bench.load import cpu_seconds
from bench.report import RESULTS
from bench.stack import BenchStack, free_port, wait_http

USERS = 32
TURNS = 320
TOKENS = 32


class Ask(BaseModel):
    content: str
    max_tokens: int = TOKENS


def sse_app() -> Any:
    from fastapi import FastAPI
    from sse_starlette.sse import EventSourceResponse

    app = FastAPI()

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/conversations/{conversation_id}/messages")
    async def post(conversation_id: str, ask: Ask) -> EventSourceResponse:
        async def events() -> AsyncIterator[dict[str, str]]:
            yield {"event": "turn", "data": json.dumps({"turn_id": conversation_id})}
            for i in range(ask.max_tokens):
                yield {"event": "token", "id": f"1-{i}", "data": json.dumps({"index": i, "text": f" w{i}"})}
            yield {"event": "done", "data": json.dumps({"finish_reason": "length"})}

        return EventSourceResponse(events())

    return app


async def closed_loop(turn: Callable[[], Awaitable[None]], users: int = USERS, turns: int = TURNS) -> float:
    """Run ``turns`` turns, ``users`` at a time; the seconds it took."""
    left = turns

    async def user() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await turn()

    started = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(users)))
    return time.perf_counter() - started


async def measured(
    turn: Callable[[], Awaitable[None]], processes: dict[str, int], own: bool = True
) -> dict[str, float]:
    """CPU ms per turn of the named processes (and this one, when ``own``) over a closed loop."""
    await closed_loop(turn, turns=USERS * 2)  # warm: connections, caches, the server's first requests
    before, mine = cpu_seconds(processes), time.process_time()
    await closed_loop(turn)
    after = cpu_seconds(processes)
    used = {name: (after[name] - before[name]) * 1000 / TURNS for name in processes}
    if own:
        used["this process"] = (time.process_time() - mine) * 1000 / TURNS
    return {name: round(ms, 2) for name, ms in used.items()}


async def http_sse() -> dict[str, float]:
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.library_floor", "--serve-sse", str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_http(f"http://127.0.0.1:{port}/livez", timeout_s=60)
        limits = httpx.Limits(max_connections=USERS)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as http:

            async def turn() -> None:
                url = f"/v1/conversations/{uuid.uuid4()}/messages"
                async with http.stream("POST", url, json={"content": "hi"}) as resp:
                    assert resp.status_code == 200, resp.status_code
                    events = [line async for line in resp.aiter_lines() if line.startswith("event:")]
                assert len(events) == TOKENS + 2, events

            return await measured(turn, {"server": server.pid}, own=False)
    finally:
        server.terminate()
        await server.wait()


async def redis_stream(url: str, redis_pid: int) -> dict[str, float]:
    from redis.asyncio import Redis

    redis = Redis.from_url(url, max_connections=4 * USERS)
    keys: list[str] = []

    async def turn() -> None:
        key = f"floor:{uuid.uuid4()}"
        keys.append(key)

        async def publish() -> None:
            await redis.xadd(key, {"type": "turn", "data": "{}"})
            for i in range(TOKENS):
                await redis.xadd(key, {"type": "token", "data": json.dumps({"index": i, "text": f" w{i}"})})
            await redis.xadd(key, {"type": "done", "data": "{}"})

        async def follow() -> None:
            last = "0-0"
            while True:
                found: Any = await redis.xread({key: last}, block=1000, count=64)
                for _stream, entries in found or []:
                    for entry_id, fields in entries:
                        last = entry_id
                        if fields[b"type"] == b"done":
                            return

        await asyncio.gather(publish(), follow())

    try:
        return await measured(turn, {"redis": redis_pid})
    finally:
        for i in range(0, len(keys), 500):
            await redis.delete(*keys[i : i + 500])
        await redis.aclose()


async def model_client(model_url: str) -> dict[str, float]:
    from huggingface_hub import AsyncInferenceClient

    client = AsyncInferenceClient(base_url=model_url)

    async def turn() -> None:
        stream = await client.chat_completion(
            [{"role": "user", "content": "hi"}], max_tokens=TOKENS, stream=True
        )
        chunks = [chunk async for chunk in stream]
        assert len(chunks) >= TOKENS, len(chunks)

    return await measured(turn, {})


async def sql(database_url: str, postgres_pid: int) -> dict[str, float]:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    engine = create_async_engine(database_url, pool_size=10, pool_pre_ping=True)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    table = f"floor_scratch_{uuid.uuid4().hex[:8]}"
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE TABLE {table} (id uuid PRIMARY KEY, role text, content text)"))
    insert = text(f"INSERT INTO {table} (id, role, content) VALUES (:id, :role, :content)")

    async def turn() -> None:
        async with sessions() as session:  # the conversation check
            await session.execute(text(f"SELECT id FROM {table} WHERE id = :id"), {"id": uuid.uuid4()})
        async with sessions.begin() as session:  # the exchange
            await session.execute(
                insert,
                [
                    {"id": uuid.uuid4(), "role": "user", "content": "hi"},
                    {"id": uuid.uuid4(), "role": "assistant", "content": "hello"},
                ],
            )
        async with sessions.begin() as session:  # the audit row
            await session.execute(insert, {"id": uuid.uuid4(), "role": "audit", "content": "POST"})

    try:
        return await measured(turn, {"postgres": postgres_pid})
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP TABLE {table}"))
        await engine.dispose()


async def temporal(address: str, temporal_pid: int) -> dict[str, float]:
    from temporalio.client import Client
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker

    from bench.temporal_floor import PreparedShape, _cpu_series, floor_first_line, floor_step

    client = await Client.connect(address)
    queue = f"bench-library-floor-{uuid.uuid4()}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[PreparedShape],
        activities=[floor_step, floor_first_line],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        found = await _cpu_series(client, queue, temporal_pid, "floor_prepared_shape", USERS, TURNS)
    used = found["cpu_ms_per_turn"]
    return {"this process": used["worker_and_client"], "temporal": used["temporal"]}


async def measure(stack: BenchStack) -> dict[str, Any]:
    os.environ.update(stack.env)
    from infra.config.endpoints import Endpoints
    from infra.config.settings import get_settings
    from infra.stack.state import read_state

    get_settings.cache_clear()
    endpoints = Endpoints.resolve(get_settings())
    state = read_state(stack.data_dir)
    assert state is not None
    pids = state.pids
    parts = {
        "http_sse": await http_sse(),
        "redis_stream": await redis_stream(endpoints.redis_url, pids["redis"]),
        "model_client": await model_client(stack.model_url),
        "sql": await sql(endpoints.database_url, pids["postgres"]),
        "temporal": await temporal(endpoints.temporal_address, pids["temporal"]),
    }
    totals = {name: round(sum(used.values()), 1) for name, used in parts.items()}
    return {"parts": parts, "per_part_ms": totals, "total_ms": round(sum(totals.values()), 1)}


def describe(result: dict[str, Any]) -> str:
    parts = ", ".join(f"{name} {ms} ms" for name, ms in result["per_part_ms"].items())
    return f"library floor per turn at {USERS} in flight: {result['total_ms']} ms ({parts})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve-sse", type=int, help=argparse.SUPPRESS)  # the HTTP part's server
    args = parser.parse_args()
    if args.serve_sse:
        import uvicorn

        uvicorn.run(sse_app(), host="127.0.0.1", port=args.serve_sse, log_level="warning")
        return
    with BenchStack("library-floor", model="fake", fake_args=("--token-ms", "5")) as stack:

        async def run() -> dict[str, Any]:
            await stack.ready()
            return await measure(stack)

        found = asyncio.run(run())
    result = {
        "benchmark": "library_floor",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "users": USERS,
        "turns": TURNS,
        "tokens": TOKENS,
        **found,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"library-floor-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(result, indent=2))
    print(describe(result))
    print(f"wrote {path}")
    # The SDK's runtime threads can abort the interpreter's finalisation (bench/temporal_floor.py).
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
