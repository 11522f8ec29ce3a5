"""Chaos, CI-sized: a dependency dies while turns are streaming; afterwards the database holds exactly
one reply (or an explicit error) per accepted message. (The worker process killed mid-stream is in
test_worker_crash.py; a model server stopped mid-turn in test_model_failures.py.)"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import psycopg
import pytest

from db.engine import libpq_url
from db.migrate import upgrade_async
from infra.components.postgres import postgres_component
from infra.endpoints import EMBEDDED_DB_NAME, EMBEDDED_DB_USER
from infra.supervisor import Supervisor
from tests.api_harness import ApiServer, isolated_settings
from tests.conftest import Services, free_port
from tests.sse import events

pytestmark = pytest.mark.timeout(240)


async def test_turns_in_flight_complete_across_a_postgres_kill(services: Services, tmp_path: Path) -> None:
    # A Postgres of this test's own, supervised as `turnflow up` supervises it (restarted when it dies).
    port, password = free_port(), uuid.uuid4().hex
    url = f"postgresql+psycopg://{EMBEDDED_DB_USER}:{password}@127.0.0.1:{port}/{EMBEDDED_DB_NAME}"
    supervisor = Supervisor(tmp_path / "logs")
    component = postgres_component(
        tmp_path / "pg", port, superuser=EMBEDDED_DB_USER, password=password, dbname=EMBEDDED_DB_NAME
    )
    await supervisor.start([component])
    watching = asyncio.create_task(supervisor.run_until_failure())
    try:
        await upgrade_async(url)
        async with ApiServer(isolated_settings(services, tmp_path, database_url=url)) as api:
            conv = await api.conversation()
            streaming = asyncio.Event()

            async def turn(n: int) -> tuple[str, str]:
                body = {"content": f"Tell story number {n}.", "max_tokens": 60, "temperature": 0}
                turn_id, last = "", ""
                async with api.client.stream("POST", f"/v1/conversations/{conv}/messages", json=body) as resp:
                    assert resp.status_code == 200
                    async for event in events(resp):
                        if event.event == "turn":
                            turn_id = event.data["turn_id"]
                        elif event.event == "token":
                            streaming.set()
                        elif event.event in ("done", "error"):
                            last = event.event
                            break
                return turn_id, last

            turns = [asyncio.create_task(turn(n)) for n in range(3)]
            await asyncio.wait_for(streaming.wait(), 60)
            [postgres] = [p for p in supervisor.processes if p.name == "postgres"]
            assert postgres.pid is not None
            os.kill(postgres.pid, signal.SIGKILL)  # while the turns stream; they persist after it is back
            ended = await asyncio.wait_for(asyncio.gather(*turns), 180)
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
    assert [last for _, last in ended] == ["done"] * 3, ended
    for turn_id, _ in ended:
        mine = sorted((role, reason) for t, role, reason in rows if t == turn_id)
        assert [role for role, _ in mine] == ["assistant", "user"], (turn_id, mine)
        assert mine[0][1] in ("length", "stop"), mine  # a reply, recorded once
    assert len(rows) == 6
