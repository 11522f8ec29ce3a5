"""Chaos, CI-sized: a dependency dies while turns are streaming; afterwards the database holds exactly
one reply (or an explicit error) per accepted message. (The worker process killed mid-stream is in
test_worker_crash.py; a model server stopped mid-turn in test_model_failures.py.)"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from redis.asyncio import Redis

from activities.adapters.context_cache import recent_key
from activities.contracts.turn import ChatTurnResult
from db.migrate import upgrade_async
from infra.config.endpoints import EMBEDDED_DB_NAME, EMBEDDED_DB_USER, libpq_url
from infra.stack.components.base import Component
from infra.stack.components.postgres import postgres_component
from infra.stack.components.redis import redis_component
from infra.stack.components.temporal import temporal_component
from infra.stack.supervisor import Supervisor
from tests.support.api_harness import ApiServer, isolated_settings
from tests.support.services import Services, db_rows, free_port, open_sealed
from tests.support.sse import Event, events


def transcript_of(services: Services, conversation_id: str) -> list[tuple[str, str, str, Any]]:
    """(turn, role, content opened, error) of each message."""
    rows = db_rows(
        services,
        "SELECT turn_id, role, tenant_id, content, error FROM messages WHERE conversation_id = %s",
        conversation_id,
    )
    return [(t, role, open_sealed(services, tenant, text), err) for t, role, tenant, text, err in rows]


pytestmark = pytest.mark.timeout(240)


class StreamedTurn:
    """One client streaming one turn, in a task: what it saw, when, and the reply it assembled."""

    def __init__(self, api: ApiServer, conv: str, n: int, *, max_tokens: int) -> None:
        self.api, self.conv = api, conv
        self.body = {"content": f"Tell story number {n}.", "max_tokens": max_tokens, "temperature": 0}
        self.turn_id = ""
        self.seen: list[tuple[float, Event]] = []  # (monotonic time, event)
        self.streaming = asyncio.Event()  # its first token arrived
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        url = f"/v1/conversations/{self.conv}/messages"
        async with self.api.client.stream("POST", url, json=self.body) as resp:
            assert resp.status_code == 200, await resp.aread()
            async for event in events(resp):
                self.seen.append((time.monotonic(), event))
                if event.event == "turn":
                    self.turn_id = event.data["turn_id"]
                elif event.event == "token":
                    self.streaming.set()
                elif event.event in ("done", "error"):
                    return

    @property
    def last(self) -> str:
        return self.seen[-1][1].event if self.seen else ""

    def tokens(self) -> list[dict[str, Any]]:
        """The latest attempt's tokens (a `reset` starts the reply over)."""
        tokens: list[dict[str, Any]] = []
        for _, event in self.seen:
            if event.event == "reset":
                tokens.clear()
            elif event.event == "token":
                tokens.append(event.data)
        return tokens


async def streaming_turns(api: ApiServer, conv: str, n: int = 3) -> list[StreamedTurn]:
    """``n`` turns started at once, once one of them streams. The model server takes one turn at a
    time: one streams, the others wait their turn (and run through whatever happens next)."""
    turns = [StreamedTurn(api, conv, i, max_tokens=80) for i in range(n)]
    started = [asyncio.create_task(t.streaming.wait()) for t in turns]
    await asyncio.wait(started, timeout=120, return_when=asyncio.FIRST_COMPLETED)
    return turns


def own_postgres(tmp_path: Path) -> tuple[Component, str]:
    """A Postgres of the test's own (to kill or stop), and its URL."""
    port, password = free_port(), uuid.uuid4().hex
    url = f"postgresql+psycopg://{EMBEDDED_DB_USER}:{password}@127.0.0.1:{port}/{EMBEDDED_DB_NAME}"
    component = postgres_component(
        tmp_path / "pg", port, superuser=EMBEDDED_DB_USER, password=password, dbname=EMBEDDED_DB_NAME
    )
    return component, url


def own_temporal(services: Services, tmp_path: Path) -> tuple[Component, str]:
    component = temporal_component(
        tmp_path / "temporal", free_port(), free_port(), services.policy.namespace, http_port=free_port()
    )
    return component, component.urls["Temporal (gRPC)"]


def assert_unavailable(resp: httpx.Response, dependency: str) -> None:
    """An explicit, retryable refusal naming what is down: never a 500."""
    assert resp.status_code == 503, resp.text
    assert resp.headers["Retry-After"] == "2"
    error = resp.json()["error"]
    assert (error["code"], error["retryable"], error["dependency"]) == (
        "dependency_unavailable",
        True,
        dependency,
    )


async def test_turns_in_flight_complete_across_a_postgres_kill(services: Services, tmp_path: Path) -> None:
    # Supervised as `turnflow up` supervises it: restarted when it dies.
    component, url = own_postgres(tmp_path)
    supervisor = Supervisor(tmp_path / "logs")
    await supervisor.start([component])
    watching = asyncio.create_task(supervisor.run_until_failure())
    try:
        await upgrade_async(url)
        async with ApiServer(isolated_settings(services, tmp_path, database_url=url)) as api:
            conv = await api.conversation()
            turns = [StreamedTurn(api, conv, n, max_tokens=60) for n in range(3)]
            await asyncio.wait_for(turns[0].streaming.wait(), 60)
            [postgres] = [p for p in supervisor.processes if p.name == "postgres"]
            assert postgres.pid is not None
            os.kill(postgres.pid, signal.SIGKILL)  # while the turns stream; they persist after it is back
            await asyncio.wait_for(asyncio.gather(*(t.task for t in turns)), 180)
    finally:
        watching.cancel()
        await supervisor.stop()
        await supervisor.start([component])  # read what was recorded
    try:
        with psycopg.connect(libpq_url(url)) as conn:
            rows = conn.execute(
                "SELECT turn_id, role, finish_reason FROM messages WHERE conversation_id = %s", (conv,)
            ).fetchall()
    finally:
        await supervisor.stop()
    assert [t.last for t in turns] == ["done"] * 3, [t.seen for t in turns]
    for turn_id in (t.turn_id for t in turns):
        mine = sorted((role, reason) for t, role, reason in rows if t == turn_id)
        assert [role for role, _ in mine] == ["assistant", "user"], (turn_id, mine)
        assert mine[0][1] in ("length", "stop"), mine  # a reply, recorded once
    assert len(rows) == 6


REDIS_OUTAGE_S = 10.0


async def test_turns_in_flight_complete_across_a_redis_outage(services: Services, tmp_path: Path) -> None:
    """Redis (the event bus and caches) stopped for 10 s while turns stream: each turn completes and
    is recorded once, its client sees a pause and then the rest of the reply (no gap, nothing twice),
    a new turn asked for meanwhile gets an explicit retryable 503, and reads keep working."""
    port = free_port()
    component = redis_component(tmp_path / "redis", port)
    url = component.urls["Redis"]
    first = Supervisor(tmp_path / "logs")
    await first.start([component])
    second = Supervisor(tmp_path / "logs")
    try:
        async with ApiServer(isolated_settings(services, tmp_path, redis_url=url)) as api:
            conv = await api.conversation()
            turns = await streaming_turns(api, conv)
            await first.stop()
            stopped = time.monotonic()
            before = [len(t.tokens()) for t in turns]
            refused = await api.client.post(
                f"/v1/conversations/{conv}/messages", json={"content": "Hello?", "stream": False}
            )
            read = await api.client.get(f"/v1/conversations/{conv}")
            await asyncio.sleep(REDIS_OUTAGE_S - (time.monotonic() - stopped))
            await second.start([component])  # the same data dir: its append-only file survives
            back = time.monotonic()
            await asyncio.wait_for(asyncio.gather(*(t.task for t in turns)), 180)
            client = Redis.from_url(url)
            cached = await client.llen(recent_key(conv))
            await client.aclose()
        rows = transcript_of(services, conv)
    finally:
        await first.stop()
        await second.stop()

    assert_unavailable(refused, "redis")
    assert read.status_code == 200, read.text
    assert len(rows) == 6, rows  # one question and one reply per turn, none for the refused one
    for turn, streamed_before in zip(turns, before, strict=True):
        assert turn.last == "done", turn.seen
        done_at = turn.seen[-1][0]
        assert done_at > back  # the turn really spanned the outage...
        tokens = turn.tokens()
        assert streamed_before < len(tokens), (streamed_before, len(tokens))  # ...mid-stream
        # Every token once, in order: what waited in the worker went out after Redis came back.
        assert [t["index"] for t in tokens] == list(range(len(tokens)))
        assert any(at > back for at, e in turn.seen if e.event == "token")
        mine = {role: (content, err) for t, role, content, err in rows if t == turn.turn_id}
        assert mine["assistant"] == ("".join(t["text"] for t in tokens), None)
    # The conversation's cached context holds each exchange once, retried persists included.
    assert cached == 6


TEMPORAL_DOWN_S = 5.0


async def test_turns_in_flight_resume_across_a_temporal_restart(services: Services, tmp_path: Path) -> None:
    """The Temporal server restarted (same database file) while turns stream: the turns resume and
    complete, each recorded once, and each client's stream carries it through to `done`."""
    component, address = own_temporal(services, tmp_path)
    first = Supervisor(tmp_path / "logs")
    await first.start([component])
    second = Supervisor(tmp_path / "logs")
    try:
        async with ApiServer(isolated_settings(services, tmp_path, temporal_address=address)) as api:
            conv = await api.conversation()
            turns = await streaming_turns(api, conv)
            await first.stop()
            await asyncio.sleep(TEMPORAL_DOWN_S)  # followers of waiting turns ask it for their status
            back = datetime.now(UTC)  # Temporal is down until this moment at least
            await second.start([component])
            await asyncio.wait_for(asyncio.gather(*(t.task for t in turns)), 180)
            completed = {}
            for t in turns:  # when Temporal recorded the turn's result, and its text
                temporal = api.app.state.resources.temporal
                handle = temporal.get_workflow_handle(t.turn_id, result_type=ChatTurnResult)
                result = await asyncio.wait_for(handle.result(), 120)
                completed[t.turn_id] = ((await handle.describe()).close_time, result.text)
        rows = transcript_of(services, conv)
    finally:
        await first.stop()
        await second.stop()
    assert len(rows) == 6, rows
    for turn in turns:
        assert turn.last == "done", turn.seen
        # Every step is a local activity: a turn streams on while Temporal is away, and its workflow
        # task completes once the server is back (a task it could not complete runs again, and
        # records once). Temporal's record of each turn agrees with what its client saw.
        closed = completed[turn.turn_id][0]
        assert closed is not None and closed > back
        tokens = turn.tokens()
        assert [t["index"] for t in tokens] == list(range(len(tokens)))
        mine = {role: (content, err) for t, role, content, err in rows if t == turn.turn_id}
        assert mine["assistant"] == ("".join(t["text"] for t in tokens), None)
        assert completed[turn.turn_id][1] == mine["assistant"][0]


async def test_requests_while_postgres_is_down_get_a_retryable_503(
    services: Services, tmp_path: Path
) -> None:
    component, url = own_postgres(tmp_path)
    supervisor = Supervisor(tmp_path / "logs")
    await supervisor.start([component])
    try:
        await upgrade_async(url)
        async with ApiServer(isolated_settings(services, tmp_path, database_url=url)) as api:
            conv = await api.conversation()
            await supervisor.stop()
            read = await api.client.get(f"/v1/conversations/{conv}")
            turn = await api.client.post(
                f"/v1/conversations/{conv}/messages", json={"content": "Hello?", "stream": False}
            )
    finally:
        await supervisor.stop()
    assert_unavailable(read, "postgres")
    assert_unavailable(turn, "postgres")


async def test_a_turn_while_temporal_is_down_gets_a_retryable_503(services: Services, tmp_path: Path) -> None:
    component, address = own_temporal(services, tmp_path)
    supervisor = Supervisor(tmp_path / "logs")
    await supervisor.start([component])
    try:
        async with ApiServer(isolated_settings(services, tmp_path, temporal_address=address)) as api:
            conv = await api.conversation()
            await supervisor.stop()
            # The client retries a start for about 10 s before it gives up.
            turn = await api.client.post(
                f"/v1/conversations/{conv}/messages", json={"content": "Hello?", "stream": False}
            )
            read = await api.client.get(f"/v1/conversations/{conv}")
    finally:
        await supervisor.stop()
    assert_unavailable(turn, "temporal")
    assert read.status_code == 200, read.text  # what does not need Temporal still works
