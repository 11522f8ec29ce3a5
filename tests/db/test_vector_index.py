"""The ANN index is configuration: `turnflow db reindex` builds HNSW or IVFFlat over vector or halfvec
beside the current index and swaps them, and the search's ORDER BY matches the built index."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import numpy as np
import psycopg

from activities.adapters.embedder import Embedders
from activities.adapters.search import HybridSearch, SearchSettings, _ann_vector_candidates
from db.engine import make_engine, make_sessionmaker
from db.migrate import upgrade_async
from db.vector_index import AnnIndex, describe, rebuild
from infra.runtime.resources import Resources
from tests.support.services import psycopg_url


def seed(conninfo: str, model: str, version: str, n: int = 60) -> str:
    rng = np.random.default_rng(5)
    with psycopg.connect(conninfo) as conn:
        tenant = conn.execute(
            "INSERT INTO tenants (id, name, embedding_model, embedding_version)"
            " VALUES (gen_random_uuid(), 't', %s, %s) RETURNING id",
            (model, version),
        ).fetchone()[0]  # type: ignore[index]
        doc = conn.execute(
            "INSERT INTO documents (id, tenant_id, source, content_hash, status, version, mime_type)"
            " VALUES (gen_random_uuid(), %s, 's', 'h', 'ready', 1, 'text/plain') RETURNING id",
            (tenant,),
        ).fetchone()[0]  # type: ignore[index]
        for i in range(n):
            v = rng.standard_normal(384)
            v /= np.linalg.norm(v)
            conn.execute(
                "INSERT INTO chunks (id, tenant_id, document_id, document_version, ordinal, text, tsv,"
                " token_count, embedding, embedding_model, embedding_version, live)"
                " VALUES (%s, %s, %s, 1, %s, %s, to_tsvector('english', %s), 5, %s, %s, %s, true)",
                (
                    uuid.uuid4(),
                    tenant,
                    doc,
                    i,
                    f"chunk {i}",
                    f"chunk {i}",
                    "[" + ",".join(map(str, v)) + "]",
                    model,
                    version,
                ),
            )
    return str(tenant)


async def test_reindex_to_ivfflat_halfvec_and_back(fresh_database: str, resources: Resources) -> None:
    await upgrade_async(fresh_database)
    conninfo = psycopg_url(fresh_database)
    embedder = resources.embedder
    tenant = seed(conninfo, embedder.model_id, embedder.version)
    ivf = AnnIndex(kind="ivfflat", precision="halfvec", lists=4)

    env = {
        **os.environ,
        "TURNFLOW_DATABASE_URL": fresh_database,
        "TURNFLOW_VECTOR_INDEX": "ivfflat",
        "TURNFLOW_VECTOR_INDEX_PRECISION": "halfvec",
        "TURNFLOW_IVFFLAT_LISTS": "4",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "infra.cli.main", "db", "reindex", env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    [index] = describe(conninfo)
    assert "ivfflat" in index and "halfvec(384)" in index and "halfvec_cosine_ops" in index

    engine = make_engine(fresh_database)
    sessions = make_sessionmaker(engine)
    try:
        # The search orders by the index's own expression, so the index can serve it: with
        # sequential scans off and no tenant filter (the owner bypasses row-level security),
        # the planner has only the ANN index left for that ORDER BY.
        with psycopg.connect(conninfo) as conn:
            conn.execute("SET enable_seqscan = off")
            order = ivf.order_by().replace(":vector", "%(vector)s")
            vector = "[" + ",".join(["0.05"] * 384) + "]"
            rows = conn.execute(f"EXPLAIN SELECT id FROM chunks ORDER BY {order} LIMIT 5", {"vector": vector})
            plan = "\n".join(r[0] for r in rows)
        assert f"ORDER BY {ivf.order_by()}" in _ann_vector_candidates(ivf)
        assert "ix_chunks_embedding_ann" in plan, plan
        search = HybridSearch(
            sessions,
            Embedders(embedder),
            resources.redis,
            resources.sealer,
            SearchSettings(index=ivf, exact_max_rows=0),
        )
        found = await search.search(tenant, "chunk", 5, "vector", use_cache=False)
        assert len(found.chunks) == 5
    finally:
        await engine.dispose()

    rebuild(conninfo, AnnIndex())  # back to the default, HNSW over vector
    [index] = describe(conninfo)
    assert "hnsw" in index and "vector_cosine_ops" in index and "m='16'" in index


def test_index_sql_follows_configuration() -> None:
    assert AnnIndex().order_by() == "embedding <=> CAST(:vector AS vector)"
    half = AnnIndex(precision="halfvec")
    assert "CAST(embedding AS halfvec(384))" in half.order_by() and "halfvec_cosine_ops" in half.create_sql()
    assert "WITH (m = 32, ef_construction = 128)" in AnnIndex(m=32, ef_construction=128).create_sql()
    ivf = AnnIndex(kind="ivfflat", lists=200).session_settings(ef_search=1, probes=10, max_scan_tuples=1)
    assert ivf["ivfflat.probes"] == "10" and ivf["ivfflat.max_probes"] == "50"
