"""The audit log is tamper-evident: every row is chained to the one before it (per tenant) by the
database itself; `turnflow audit verify` names the first edited or deleted row, and a chain head kept
outside the database shows rows cut from the end. Run on a fresh database of its own."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from db.audit_chain import ChainBreak, ChainHead, chain_breaks, chain_heads, heads_lost
from db.engine import make_engine, make_sessionmaker
from db.migrate import upgrade_async
from infra.config.settings import REPO_ROOT
from tests.support.api_harness import cli_env
from tests.support.services import Services, psycopg_url

INSERT = "INSERT INTO audit_events (tenant_id, actor, action, details) VALUES (%s, %s, %s, %s) RETURNING id"


def write(url: str, tenant: str | None, n: int) -> list[int]:
    """``n`` audit rows of ``tenant`` (None: the platform's), each in its own transaction."""
    ids = []
    with psycopg.connect(psycopg_url(url), autocommit=True) as conn:
        for i in range(n):
            row = conn.execute(
                INSERT, (tenant, "test", "conversations.create", json.dumps({"n": i}))
            ).fetchone()
            assert row is not None
            ids.append(int(row[0]))
    return ids


def sql(url: str, statement: str, *params: object) -> None:
    with psycopg.connect(psycopg_url(url), autocommit=True) as conn:
        conn.execute(statement, params)


def verify_cli(services: Services, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**cli_env(services.settings), "TURNFLOW_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", "audit", "verify", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
async def chained(fresh_database: str) -> str:
    await upgrade_async(fresh_database)
    with psycopg.connect(psycopg_url(fresh_database), autocommit=True) as conn:
        for name in ("alpha", "beta"):
            conn.execute("INSERT INTO tenants (id, name) VALUES (gen_random_uuid(), %s)", (name,))
    return fresh_database


def tenant_id(url: str, name: str) -> str:
    with psycopg.connect(psycopg_url(url)) as conn:
        row = conn.execute("SELECT id FROM tenants WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return str(row[0])


async def breaks(url: str) -> list[ChainBreak]:
    engine = make_engine(url, role=None)
    try:
        async with make_sessionmaker(engine)() as session:
            return await chain_breaks(session)
    finally:
        await engine.dispose()


async def test_concurrent_writers_make_one_unbroken_chain(chained: str) -> None:
    alpha = tenant_id(chained, "alpha")
    with ThreadPoolExecutor(8) as pool:  # eight writers at once on one tenant's chain
        written = [i for ids in pool.map(lambda _: write(chained, alpha, 6), range(8)) for i in ids]
    with psycopg.connect(psycopg_url(chained)) as conn:
        seqs = [
            r[0] for r in conn.execute("SELECT seq FROM audit_events WHERE chain = %s ORDER BY seq", (alpha,))
        ]
    assert seqs == list(range(1, len(written) + 1))  # no fork, no gap
    assert await breaks(chained) == []


async def test_an_edited_or_deleted_row_is_named(chained: str, services: Services, tmp_path: Path) -> None:
    alpha, beta = tenant_id(chained, "alpha"), tenant_id(chained, "beta")
    a = write(chained, alpha, 5)
    b = write(chained, beta, 4)
    platform = write(chained, None, 3)
    ok = await asyncio.to_thread(verify_cli, services, chained)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "3 chains verified" in ok.stdout

    # Kept outside the database before anything happens to it.
    head_file = tmp_path / "heads.json"
    engine = make_engine(chained, role=None)
    async with make_sessionmaker(engine)() as session:
        head_file.write_text(json.dumps([h.__dict__ for h in await chain_heads(session)]))

    # Someone with database access edits one row of alpha's and deletes one of beta's.
    sql(chained, "UPDATE audit_events SET details = '{\"n\": 99}' WHERE id = %s", a[2])
    sql(chained, "DELETE FROM audit_events WHERE id = %s", b[1])
    found = {x.chain: x for x in await breaks(chained)}
    assert (found[alpha].row_id, found[alpha].problem) == (a[2], "altered")
    assert (found[beta].row_id, found[beta].problem) == (b[2], "missing")  # the row after the gap
    assert platform and set(found) == {alpha, beta}
    failed = await asyncio.to_thread(verify_cli, services, chained)
    assert failed.returncode == 1
    assert f"audit row {a[2]} (#3): its content no longer matches its hash" in failed.stdout
    assert f"audit row {b[2]} (#3): the row(s) before it are gone" in failed.stdout

    # Moving a row to another tenant is an edit too, although tenant_id is not hashed.
    sql(chained, "UPDATE audit_events SET details = '{\"n\": 2}' WHERE id = %s", a[2])  # put back
    sql(chained, "UPDATE audit_events SET tenant_id = %s WHERE id = %s", beta, a[3])
    found = {x.chain: x for x in await breaks(chained)}
    assert (found[alpha].row_id, found[alpha].problem) == (a[3], "altered")

    # Rows cut from the end leave no gap: only the kept head shows it.
    sql(chained, "DELETE FROM audit_events WHERE id = %s", platform[-1])
    assert "platform" not in {x.chain for x in await breaks(chained)}
    kept = json.loads(head_file.read_text())
    async with make_sessionmaker(engine)() as session:
        lost = await heads_lost(session, [ChainHead(**h) for h in kept])
    await engine.dispose()
    assert lost == [f"chain platform: rows up to #3 (audit row {platform[-1]}) are gone"]
    cut = await asyncio.to_thread(verify_cli, services, chained, "--head", str(head_file))
    assert cut.returncode == 1 and "chain platform: rows up to #3" in cut.stdout


async def test_a_deleted_tenant_keeps_its_chain_whole(chained: str) -> None:
    alpha = tenant_id(chained, "alpha")
    write(chained, alpha, 3)
    sql(chained, "DELETE FROM tenants WHERE id = %s", alpha)  # its audit rows' tenant_id → NULL
    assert await breaks(chained) == []
