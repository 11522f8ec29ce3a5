"""Documents end to end on real Postgres+pgvector, Redis, Temporal and the real embedder: ingest,
update, delete, idempotent re-ingest, tenant isolation (queries and row-level security), bad uploads."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import func, select, text

from db.access import ensure_tenant
from db.engine import scope_to_tenant
from db.models import Chunk
from infra.runtime.resources import Resources
from tests.support.api_harness import ApiServer, key_headers
from tests.support.pdf_maker import text_pdf
from tests.support.prometheus import scrape, total
from tests.support.services import Services, psycopg_url

LIGHTHOUSE = (
    "The Zorblat lighthouse stands on the island of Quentara. It was built in 1887 by the engineer "
    "Mirela Vance. Its lens was made in Paris and weighs four tonnes. Contact the keeper at "
    "keeper@quentara.example for visits."
)


# The tenant each test key belongs to, by its Authorization header.
_TENANT_OF: dict[str, str] = {}


async def tenant_headers(resources: Resources) -> dict[str, str]:
    """A key of a new tenant of this test's own."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    headers = await key_headers(resources.sessions, name)
    _TENANT_OF[headers["Authorization"]] = name
    return headers


async def ingest(api: ApiServer, headers: dict[str, str], **body: Any) -> Any:
    resp = await api.client.post("/v1/documents", json=body, headers=headers)
    return resp


async def search(api: ApiServer, headers: dict[str, str], query: str, k: int = 5) -> list[dict[str, Any]]:
    resp = await api.client.post("/v1/search", json={"query": query, "k": k}, headers=headers)
    assert resp.status_code == 200, resp.text
    return list(resp.json()["data"])


async def test_ingest_search_reingest_update_delete(api: ApiServer, resources: Resources) -> None:
    h = await tenant_headers(resources)
    created = await ingest(api, h, text=LIGHTHOUSE, source="lighthouse.txt", title="Zorblat")
    assert created.status_code == 201, created.text
    doc = created.json()
    assert doc["status"] == "ready" and doc["version"] == 1 and doc["chunk_count"] >= 1
    assert doc["embedded_count"] == doc["chunk_count"]
    assert doc["pii_redacted"] == {"EMAIL": 1}
    assert created.headers["location"] == f"/v1/documents/{doc['id']}"

    found = await search(api, h, "Who built the Zorblat lighthouse?")
    assert found and found[0]["document_id"] == doc["id"] and "Mirela Vance" in found[0]["text"]
    assert "keeper@quentara.example" not in found[0]["text"] and "[EMAIL]" in found[0]["text"]

    # The same bytes again change nothing.
    again = await ingest(api, h, text=LIGHTHOUSE, source="lighthouse.txt")
    assert again.status_code == 200 and again.json()["unchanged"] is True
    assert again.json()["id"] == doc["id"] and again.json()["version"] == 1

    # New content for the same source: version 2; version 1's chunks are tombstoned, never mixed in.
    changed = LIGHTHOUSE.replace("Mirela Vance", "Tobias Grell").replace("1887", "1902")
    updated = await ingest(api, h, text=changed, source="lighthouse.txt")
    assert updated.status_code == 201 and updated.json()["version"] == 2
    found = await search(api, h, "Who built the Zorblat lighthouse?")
    assert found and all(c["document_version"] == 2 for c in found)
    assert not any("Mirela Vance" in c["text"] for c in found) and "Tobias Grell" in found[0]["text"]
    tenant = await _tenant(h, resources)
    async with resources.sessions.begin() as session:
        await scope_to_tenant(session, tenant)
        live_versions = (
            await session.scalars(
                select(func.distinct(Chunk.document_version)).where(
                    Chunk.document_id == uuid.UUID(doc["id"]), Chunk.live
                )
            )
        ).all()
        tombstoned = await session.scalar(
            select(func.count()).where(
                Chunk.document_id == uuid.UUID(doc["id"]), Chunk.tombstoned_at.is_not(None)
            )
        )
    assert live_versions == [2] and tombstoned and tombstoned >= 1

    # Delete: tombstoned, never found again; a second delete is a 404.
    deleted = await api.client.delete(f"/v1/documents/{doc['id']}", headers=h)
    assert deleted.status_code == 200 and deleted.json()["status"] == "deleted"
    assert await search(api, h, "Zorblat lighthouse Tobias Grell") == []
    assert (await api.client.delete(f"/v1/documents/{doc['id']}", headers=h)).status_code == 404
    listed = (await api.client.get("/v1/documents", headers=h)).json()
    assert listed["total"] == 0
    listed = (await api.client.get("/v1/documents?include_deleted=true", headers=h)).json()
    assert [d["id"] for d in listed["data"]] == [doc["id"]]


async def _tenant(headers: dict[str, str], resources: Resources) -> uuid.UUID:
    return await ensure_tenant(resources.sessions, _TENANT_OF[headers["Authorization"]])


async def test_file_uploads_pdf_html_markdown(api: ApiServer, resources: Resources) -> None:
    h = await tenant_headers(resources)
    pdf = text_pdf(["The Velmora observatory opened in 1931.", "Its telescope has a 2 metre mirror."])
    resp = await api.client.post(
        "/v1/documents", files={"file": ("velmora.pdf", pdf, "application/pdf")}, headers=h
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["mime_type"] == "application/pdf" and resp.json()["source"] == "velmora.pdf"
    html = (
        b"<html><head><title>x</title><script>var secret = 'hidden-token';</script></head>"
        b"<body><h1>Harbour</h1><p>The Ostrel harbour freezes every February.</p></body></html>"
    )
    resp = await api.client.post(
        "/v1/documents", files={"file": ("harbour.html", html, "text/html")}, headers=h
    )
    assert resp.status_code == 201, resp.text
    md = b"# Bakery\n\nThe **Plimsoll** bakery sells rye bread on Sundays.\n"
    resp = await api.client.post(
        "/v1/documents", files={"file": ("bakery.md", md, "application/octet-stream")}, headers=h
    )
    assert resp.status_code == 201 and resp.json()["mime_type"] == "text/markdown"

    assert "1931" in (await search(api, h, "When did the Velmora observatory open?"))[0]["text"]
    harbour = (await search(api, h, "Which harbour freezes in winter?"))[0]["text"]
    assert "Ostrel" in harbour and "hidden-token" not in harbour
    assert "Plimsoll" in (await search(api, h, "Where can I buy rye bread?"))[0]["text"]


async def test_bad_uploads_get_clear_errors(api: ApiServer, resources: Resources) -> None:
    h = await tenant_headers(resources)

    async def upload(name: str, content: bytes, mime: str) -> Any:
        return await api.client.post("/v1/documents", files={"file": (name, content, mime)}, headers=h)

    empty = await upload("empty.txt", b"   \n", "text/plain")
    assert empty.status_code == 422 and "empty" in empty.json()["error"]["message"]
    wrong = await upload("sheet.xlsx", b"PK\x03\x04 not a document", "application/vnd.ms-excel")
    assert wrong.status_code == 415 and "not supported" in wrong.json()["error"]["message"]
    unknown = await upload("notes", b"hello", "application/octet-stream")
    assert unknown.status_code == 415
    broken = await upload("broken.pdf", b"%PDF-1.4\n this is not really a pdf", "application/pdf")
    assert broken.status_code == 422 and "PDF" in broken.json()["error"]["message"]
    latin1 = await upload("latin1.txt", "caf\u00e9 cr\u00e8me".encode("latin-1"), "text/plain")
    assert latin1.status_code == 422 and latin1.json()["error"]["code"] == "not_utf8"
    too_big = await upload("big.txt", b"a" * (api.settings.max_document_bytes + 1), "text/plain")
    assert too_big.status_code == 413
    # A multipart title longer than the column holds: a 422, as in a JSON body (once a 500).
    long_title = await api.client.post(
        "/v1/documents",
        files={"file": ("t.txt", b"Some text.", "text/plain")},
        data={"title": "\U0001f60d" * 1001},
        headers=h,
    )
    assert long_title.status_code == 422 and "1000" in long_title.json()["error"]["message"]
    no_text = await api.client.post("/v1/documents", json={"text": ""}, headers=h)
    assert no_text.status_code == 422 and no_text.json()["error"]["type"] == "invalid_request_error"
    malformed = await api.client.post(
        "/v1/documents", content=b"{not json", headers={**h, "Content-Type": "application/json"}
    )
    assert malformed.status_code == 422
    unknown_doc = await api.client.get(f"/v1/documents/{uuid.uuid4()}", headers=h)
    assert unknown_doc.status_code == 404


async def test_large_upload_is_asynchronous_with_progress(api: ApiServer, resources: Resources) -> None:
    h = await tenant_headers(resources)
    sentences = [
        f"Fact number {i}: the village of Arnhollow keeps {i} lanterns lit in winter." for i in range(400)
    ]
    resp = await api.client.post(
        "/v1/documents?wait=false", json={"text": " ".join(sentences), "source": "arnhollow-2.txt"}, headers=h
    )
    assert resp.status_code == 202, resp.text
    doc_id = resp.json()["id"]
    assert resp.json()["workflow_id"] == f"ingest-{doc_id}-v1"
    seen_status = set()
    for _ in range(600):
        view = (await api.client.get(f"/v1/documents/{doc_id}", headers=h)).json()
        seen_status.add(view["status"])
        if view["status"] == "ready":
            break
        await asyncio.sleep(0.1)
    assert view["status"] == "ready" and view["embedded_count"] == view["chunk_count"] > 5
    assert seen_status & {"pending", "ingesting"}  # it was answered before it was done


async def test_tenant_isolation_in_queries_and_by_row_level_security(
    api: ApiServer, resources: Resources, services: Services
) -> None:
    a, b = await tenant_headers(resources), await tenant_headers(resources)
    doc = (await ingest(api, a, text=LIGHTHOUSE, source="secret.txt")).json()
    # Through the API: tenant B cannot see, search or delete tenant A's document.
    assert (await api.client.get(f"/v1/documents/{doc['id']}", headers=b)).status_code == 404
    assert (await api.client.delete(f"/v1/documents/{doc['id']}", headers=b)).status_code == 404
    assert await search(api, b, "Zorblat lighthouse") == []
    assert (await api.client.get("/v1/documents", headers=b)).json()["total"] == 0
    # The same bytes from tenant B are B's own new document, not A's.
    mine = await ingest(api, b, text=LIGHTHOUSE, source="secret.txt")
    assert mine.status_code == 201 and mine.json()["id"] != doc["id"]

    # Row-level security: the app role, scoped to B, gets none of A's rows even with no tenant filter.
    tenant_a, tenant_b = await _tenant(a, resources), await _tenant(b, resources)
    async with resources.sessions.begin() as session:
        assert await session.scalar(text("SELECT current_user")) == "turnflow_app"
        await scope_to_tenant(session, tenant_b)
        tenants_seen = set((await session.scalars(text("SELECT DISTINCT tenant_id FROM chunks"))).all())
        docs_seen = set((await session.scalars(text("SELECT DISTINCT tenant_id FROM documents"))).all())
        assert tenants_seen == {tenant_b} and docs_seen == {tenant_b}
        # Writing into another tenant is refused too.
        updated = await session.execute(
            text("UPDATE chunks SET live = false WHERE tenant_id = :a"), {"a": tenant_a}
        )
        assert updated.rowcount == 0  # type: ignore[attr-defined]
    async with resources.sessions.begin() as session:  # not scoped at all: nothing
        assert await session.scalar(text("SELECT count(*) FROM chunks")) == 0
    # The owner (migrations' login) still sees both, so the rows really are there.
    url = psycopg_url(services.endpoints.database_url)
    with psycopg.connect(url) as conn:
        owners = conn.execute(
            "SELECT count(DISTINCT tenant_id) FROM chunks WHERE tenant_id = ANY(%s)", ([tenant_a, tenant_b],)
        ).fetchone()
    assert owners == (2,)


async def test_search_results_and_query_embeddings_are_cached_until_documents_change(
    api: ApiServer, resources: Resources
) -> None:
    h = await tenant_headers(resources)
    await ingest(api, h, text=LIGHTHOUSE, source="a.txt")
    query = f"Who built the lighthouse on Quentara? ({uuid.uuid4().hex[:6]})"

    async def stats() -> dict[str, int]:
        scraped = await scrape(api)
        return {
            f"{cache}_cache_{result}": int(
                total(scraped, "turnflow_retrieval_cache_requests_total", cache=cache, result=result)
            )
            for cache in ("embedding", "result")
            for result in ("hit", "miss")
        }

    async def ask() -> dict[str, Any]:
        resp = await api.client.post("/v1/search", json={"query": query, "k": 3}, headers=h)
        return dict(resp.json())

    before = await stats()
    first = await ask()
    assert first["cached"] is False
    after_first = await stats()
    assert after_first.get("embedding_cache_miss", 0) == before.get("embedding_cache_miss", 0) + 1
    second = await ask()
    assert second["cached"] is True and second["data"] == first["data"]
    assert (await stats()).get("result_cache_hit", 0) == after_first.get("result_cache_hit", 0) + 1

    # A document change invalidates the tenant's cached results; the query's embedding stays cached.
    await ingest(api, h, text="The Quentara ferry runs twice a day in summer.", source="b.txt")
    third = await ask()
    assert third["cached"] is False
    assert (await stats()).get("embedding_cache_hit", 0) == after_first.get("embedding_cache_hit", 0) + 1


async def run_cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    """The CLI as a subprocess, awaited: the API under test serves from this same event loop."""
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "infra.cli.main",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 180)
    return proc.returncode or 0, out.decode()


async def test_ingest_command_uploads_a_folder_and_waits(
    api: ApiServer, services: Services, resources: Resources, tmp_path: Path
) -> None:
    import os

    headers = await tenant_headers(resources)
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "bridge.txt").write_text("The Corvane bridge opened in 1964 and spans the Lisk river.")
    (folder / "sub" / "mill.md").write_text("# Mill\n\nThe Haskel windmill grinds barley every Thursday.\n")
    (folder / "photo.png").write_bytes(b"\x89PNG")
    env = {**os.environ, "TURNFLOW_DATA_DIR": str(services.data_dir), "COLUMNS": "200"}
    key = headers["Authorization"].removeprefix("Bearer ")
    args = ("ingest", str(folder), "--api", api.url, "--api-key", key)
    code, out = await run_cli(env, *args)
    assert code == 0, out
    assert "skipped" in out and "photo.png" in out and out.count("ready") == 2
    assert "Haskel" in (await search(api, headers, "When does the windmill grind barley?"))[0]["text"]
    code, out = await run_cli(env, *args)
    assert code == 0 and out.count("unchanged") == 2, out

    (folder / "empty.txt").write_text("")
    code, out = await run_cli(env, *args)
    assert code == 1 and "rejected" in out and "empty" in out, out


async def test_purge_removes_old_tombstones_for_good(
    api: ApiServer, resources: Resources, services: Services
) -> None:
    from activities.contracts.maintenance import PurgeInput, PurgeReport
    from infra.config.policy import load_policy

    h = await tenant_headers(resources)
    old = (await ingest(api, h, text="The old Brannock pier was torn down.", source="old.txt")).json()
    recent = (await ingest(api, h, text="The Brannock ferry stopped in May.", source="recent.txt")).json()
    for doc in (old, recent):
        assert (await api.client.delete(f"/v1/documents/{doc['id']}", headers=h)).status_code == 200
    owner = psycopg_url(services.endpoints.database_url)
    with psycopg.connect(owner) as conn:  # the old one was deleted eight days ago
        conn.execute(
            "UPDATE documents SET deleted_at = now() - interval '8 days' WHERE id = %s", (old["id"],)
        )
        conn.execute(
            "UPDATE chunks SET tombstoned_at = now() - interval '8 days' WHERE document_id = %s", (old["id"],)
        )

    def counts() -> tuple[int, int]:
        with psycopg.connect(owner) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM documents WHERE id = %s), (SELECT count(*) FROM chunks"
                " WHERE document_id = %s)",
                (old["id"], old["id"]),
            ).fetchone()
        assert row
        return int(row[0]), int(row[1])

    policy = load_policy(api.settings.policy_file)

    async def purge(dry_run: bool) -> PurgeReport:
        return await resources.temporal.execute_workflow(
            "purge_tombstones",
            PurgeInput(options=policy.options_for("purge_tombstones"), dry_run=dry_run),
            id=f"purge-test-{uuid.uuid4()}",
            task_queue=policy.queue("ingest"),
            result_type=PurgeReport,
        )

    before = counts()
    assert before[0] == 1 and before[1] >= 1
    dry = await purge(dry_run=True)
    assert dry.dry_run and dry.documents >= 1 and dry.chunks >= before[1] and counts() == before
    done = await purge(dry_run=False)
    assert done.documents >= 1 and counts() == (0, 0)
    # The recently deleted document is kept until its time comes.
    assert (await api.client.get(f"/v1/documents/{recent['id']}", headers=h)).json()["status"] == "deleted"


async def test_same_bytes_again_restart_an_ingestion_that_never_started(
    api: ApiServer, resources: Resources, services: Services
) -> None:
    """Nothing lost: a document recorded whose workflow never started (the start failed after the
    rows were written) is picked up when the client retries the upload."""
    import hashlib

    h = await tenant_headers(resources)
    tenant = await _tenant(h, resources)
    body = b"The Quarrow mill was rebuilt after the flood of 1911."
    doc_id, upload_id = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(psycopg_url(services.endpoints.database_url)) as conn:
        conn.execute(
            "INSERT INTO documents (id, tenant_id, source, content_hash, version, status, mime_type,"
            " workflow_id) VALUES (%s, %s, 'mill.txt', %s, 1, 'pending', 'text/plain', %s)",
            (doc_id, tenant, hashlib.sha256(body).hexdigest(), f"ingest-{doc_id}-v1"),
        )
        conn.execute(
            "INSERT INTO document_uploads (id, tenant_id, document_id, document_version, filename, mime_type,"
            " content) VALUES (%s, %s, %s, 1, 'mill.txt', 'text/plain', %s)",
            (upload_id, tenant, doc_id, body),
        )
    again = await api.client.post(
        "/v1/documents",
        files={"file": ("mill.txt", body, "text/plain")},
        data={"source": "mill.txt"},
        headers=h,
    )
    assert (
        again.status_code == 200 and again.json()["unchanged"] is True and again.json()["id"] == str(doc_id)
    )
    for _ in range(300):
        view = (await api.client.get(f"/v1/documents/{doc_id}", headers=h)).json()
        if view["status"] == "ready":
            break
        await asyncio.sleep(0.1)
    assert view["status"] == "ready" and view["chunk_count"] == 1
    assert "1911" in (await search(api, h, "When was the Quarrow mill rebuilt?"))[0]["text"]
