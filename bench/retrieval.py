"""Vector index options on this machine: recall@10 against exact search and query latency
p50/p95/p99, for an unfiltered query, a 1%-selective tenant filter, an unsatisfiable filter, and
hybrid (vector + full-text, fused); plus ingestion throughput with embedding included.

Run against a running stack's Postgres (`make run` in another terminal):

    .venv/bin/python -m bench.retrieval                 # 100k vectors over 100 tenants
    .venv/bin/python -m bench.retrieval --rows 1000000  # 1M
    .venv/bin/python -m bench.retrieval --options hnsw-vector ivfflat-vector

Vectors are synthetic (clusters in 384 dimensions, normalised, like sentence embeddings); exact
neighbours come from numpy. Each option gets its own scratch table, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector import HalfVector
from pgvector.psycopg import register_vector

from activities.adapters.search import RRF_K, SearchSettings
from db.documents import vector_literal
from infra.config.endpoints import Endpoints
from infra.config.settings import get_settings
from infra.eval.stats import percentile

RESULTS = Path(__file__).parent / "results"
DIM, TENANTS, K = 384, 100, 10
EF_SWEEP = (20, 40, 100)
EXACT_MAX_ROWS = SearchSettings().exact_max_rows  # turnflow's default bound for exact tenant search
VOCAB = [f"w{i}" for i in range(3000)]


@dataclass(frozen=True)
class IndexOption:
    name: str
    column: str  # vector(384) or halfvec(384)
    index: str  # the CREATE INDEX's USING clause
    session: tuple[str, ...]  # per-query settings


def options(rows: int) -> dict[str, IndexOption]:
    lists = max(10, int(rows**0.5))
    hnsw = (
        "SET hnsw.ef_search = 100",
        "SET hnsw.iterative_scan = relaxed_order",
        "SET hnsw.max_scan_tuples = 20000",
    )
    ivf = (
        f"SET ivfflat.probes = {max(1, lists // 20)}",
        "SET ivfflat.iterative_scan = relaxed_order",
        f"SET ivfflat.max_probes = {max(1, lists // 4)}",
    )
    return {
        "hnsw-vector": IndexOption(
            "hnsw-vector",
            f"vector({DIM})",
            "hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)",
            hnsw,
        ),
        "hnsw-halfvec": IndexOption(
            "hnsw-halfvec",
            f"halfvec({DIM})",
            "hnsw (embedding halfvec_cosine_ops) WITH (m = 16, ef_construction = 64)",
            hnsw,
        ),
        "ivfflat-vector": IndexOption(
            "ivfflat-vector",
            f"vector({DIM})",
            f"ivfflat (embedding vector_cosine_ops) WITH (lists = {lists})",
            ivf,
        ),
    }


def synthetic(rows: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Embedding-like vectors: a clustered 32-dimensional latent space projected into 384 dimensions
    (sentence embeddings have a low intrinsic dimension; uniform noise in 384-d would not)."""
    rng = np.random.default_rng(seed)
    latent_dim, clusters = 32, max(50, rows // 100)
    centres = rng.standard_normal((clusters, latent_dim)).astype(np.float32)
    latent = centres[rng.integers(0, clusters, rows)] + 0.5 * rng.standard_normal((rows, latent_dim)).astype(
        np.float32
    )
    projection = rng.standard_normal((latent_dim, DIM)).astype(np.float32)
    vectors = latent @ projection + 0.5 * rng.standard_normal((rows, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    tenants = rng.integers(0, TENANTS, rows).astype(np.int32)
    vocab = np.array(VOCAB)
    texts = [" ".join(words) for words in vocab[rng.integers(0, len(VOCAB), (rows, 8))]]
    return vectors, tenants, texts


def load(
    conn: psycopg.Connection[Any],
    opt: IndexOption,
    vectors: np.ndarray,
    tenants: np.ndarray,
    texts: list[str],
) -> float:
    table = f"bench_{opt.name.replace('-', '_')}"
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute(
        f"CREATE TABLE {table} (id bigint PRIMARY KEY, tenant int NOT NULL, embedding {opt.column},"
        " body text, tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', body)) STORED)"
    )
    # Binary COPY: pgvector's adapter writes numpy vectors as they are (no text formatting).
    sql = f"COPY {table} (id, tenant, embedding, body) FROM STDIN WITH (FORMAT BINARY)"
    with conn.cursor().copy(sql) as copy:
        copy.set_types(["int8", "int4", opt.column.split("(")[0], "text"])
        wrap = HalfVector if opt.column.startswith("halfvec") else (lambda v: v)
        for i, (v, t, body) in enumerate(zip(vectors, tenants, texts, strict=True)):
            copy.write_row((i, int(t), wrap(v), body))
    start = time.perf_counter()
    conn.execute("SET maintenance_work_mem = '3GB'")
    conn.execute(f"CREATE INDEX ON {table} USING {opt.index}")
    conn.execute(f"CREATE INDEX ON {table} USING gin (tsv)")
    conn.execute(f"CREATE INDEX ON {table} (tenant)")
    conn.execute(f"ANALYZE {table}")
    return time.perf_counter() - start


def run_option(
    conn: psycopg.Connection[Any],
    opt: IndexOption,
    vectors: np.ndarray,
    tenants: np.ndarray,
    texts: list[str],
    queries: int,
) -> dict[str, Any]:
    table = f"bench_{opt.name.replace('-', '_')}"
    build_s = load(conn, opt, vectors, tenants, texts)
    for statement in opt.session:
        conn.execute(statement)
    rng = np.random.default_rng(11)
    picks = rng.integers(0, len(vectors), queries)
    qvecs = vectors[picks] + 0.02 * rng.standard_normal((queries, DIM)).astype(np.float32)
    qvecs /= np.linalg.norm(qvecs, axis=1, keepdims=True)
    cast = "halfvec" if "halfvec" in opt.column else "vector"
    knn = f"SELECT id FROM {table} {{where}} ORDER BY embedding <=> %s::{cast} LIMIT {K}"
    out: dict[str, Any] = {"build_seconds": round(build_s, 1)}

    def timed(sql: str, params: tuple[Any, ...]) -> tuple[list[int], float]:
        start = time.perf_counter()
        ids = [r[0] for r in conn.execute(sql, params)]
        return ids, (time.perf_counter() - start) * 1000

    # Unfiltered, and one tenant of 100 (1%): through the ANN index with an iterative scan, and the
    # way turnflow searches a tenant that small (exactly, through the tenant index). Recall is
    # against numpy's exact answer.
    probe = f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE tenant = %s LIMIT {EXACT_MAX_ROWS + 1}) AS s"
    exact_sql = (
        f"WITH mine AS MATERIALIZED (SELECT id, embedding FROM {table} WHERE tenant = %s)"
        f" SELECT id FROM mine ORDER BY embedding <=> %s::{cast} LIMIT {K}"
    )
    # One untimed pass first: latencies are for a warm index, as a serving one is.
    for q in qvecs:
        conn.execute(knn.format(where=""), (vector_literal(q),)).fetchall()
    if opt.name.startswith("hnsw"):
        # The search breadth trades recall for latency; more so as the index grows.
        for ef in EF_SWEEP:
            conn.execute(f"SET hnsw.ef_search = {ef}")
            lat, recall = [], []
            for q in qvecs:
                exact = set(np.argsort(-(vectors @ q))[:K].tolist())
                ids, ms = timed(knn.format(where=""), (vector_literal(q),))
                lat.append(ms)
                recall.append(len(exact & set(ids)) / K)
            out[f"unfiltered_ef{ef}"] = _summary(lat) | {"recall@10": round(float(np.mean(recall)), 4)}
        for statement in opt.session:
            conn.execute(statement)
    for scenario in ("unfiltered", "tenant_1pct_ann", "tenant_1pct"):
        # Iterative scans are for filtered queries; on an unfiltered one they only add work (at 1M
        # rows, p95 3.5 → 52 ms). turnflow's own queries always carry the tenant filter.
        kind = opt.name.split("-")[0]
        conn.execute(f"SET {kind}.iterative_scan = {'off' if scenario == 'unfiltered' else 'relaxed_order'}")
        lat, recall, full = [], [], 0
        for q, pick in zip(qvecs, picks, strict=True):
            tenant = int(tenants[pick])
            mask = np.ones(len(vectors), bool) if scenario == "unfiltered" else tenants == tenant
            scores = vectors[mask] @ q
            exact = set(np.flatnonzero(mask)[np.argsort(-scores)[:K]].tolist())
            if scenario == "unfiltered":
                ids, ms = timed(knn.format(where=""), (vector_literal(q),))
            elif scenario == "tenant_1pct_ann":
                ids, ms = timed(knn.format(where="WHERE tenant = %s"), (tenant, vector_literal(q)))
            else:  # turnflow's rule: exactly when the tenant is small, else through the index
                start = time.perf_counter()
                size = conn.execute(probe, (tenant,)).fetchone()[0]  # type: ignore[index]
                ids = [
                    r[0]
                    for r in conn.execute(
                        exact_sql if size <= EXACT_MAX_ROWS else knn.format(where="WHERE tenant = %s"),
                        (tenant, vector_literal(q)),
                    )
                ]
                ms = (time.perf_counter() - start) * 1000
            lat.append(ms)
            recall.append(len(exact & set(ids)) / K)
            full += len(ids) == K
        out[scenario] = _summary(lat) | {
            "recall@10": round(float(np.mean(recall)), 4),
            "full_k_share": round(full / queries, 4),
        }
    # A filter nothing passes: turnflow first counts the tenant's rows through the tenant index
    # (bounded), finds none and stops; the raw ANN query must give up within its scan bound.
    lat = [timed(probe, (TENANTS + 1,))[1] for _ in qvecs]
    out["unsatisfiable"] = _summary(lat)
    lat = [timed(knn.format(where="WHERE tenant = %s"), (TENANTS + 1, vector_literal(q)))[1] for q in qvecs]
    out["unsatisfiable_ann"] = _summary(lat)
    # Hybrid: vector and full-text candidates for one tenant, fused by reciprocal rank.
    lat = []
    for q, pick in zip(qvecs, picks, strict=True):
        tenant, words = int(tenants[pick]), " | ".join(texts[pick].split()[:3])
        start = time.perf_counter()
        size = conn.execute(probe, (tenant,)).fetchone()[0]  # type: ignore[index]
        vector_sql = exact_sql if size <= EXACT_MAX_ROWS else knn.format(where="WHERE tenant = %s")
        vec = [
            r[0]
            for r in conn.execute(vector_sql.replace(f"LIMIT {K}", "LIMIT 50"), (tenant, vector_literal(q)))
        ]
        txt = [
            r[0]
            for r in conn.execute(
                f"SELECT id FROM {table} WHERE tenant = %s AND tsv @@ to_tsquery('simple', %s)"
                " ORDER BY ts_rank(tsv, to_tsquery('simple', %s)) DESC LIMIT 50",
                (tenant, words, words),
            )
        ]
        fused: dict[int, float] = {}
        for ranked in (vec, txt):
            for rank, i in enumerate(ranked, start=1):
                fused[i] = fused.get(i, 0.0) + 1 / (RRF_K + rank)
        top = sorted(fused, key=fused.__getitem__, reverse=True)[:K]
        assert len(top) <= K
        lat.append((time.perf_counter() - start) * 1000)
    out["hybrid_tenant"] = _summary(lat)
    conn.execute(f"DROP TABLE {table}")
    return out


def _summary(lat: list[float]) -> dict[str, float]:
    return {f"p{p}_ms": round(percentile(lat, p) or 0.0, 2) for p in (50, 95, 99)}


async def ingest_throughput(docs: int) -> dict[str, Any]:
    """Chunks per second through the real path: redact → chunk → embed (MiniLM) → insert."""
    import uuid

    from sqlalchemy import delete

    from activities.logic.chunking import Chunker
    from db.access import ensure_tenant
    from db.models import Tenant
    from infra.eval.bulk_ingest import TextDocument, bulk_ingest
    from infra.runtime.resources import Resources

    res = await Resources.open(get_settings(), lazy_temporal=True)
    rng = np.random.default_rng(3)
    texts = [" ".join(rng.choice(VOCAB, 150)) + "." for _ in range(docs)]
    try:
        await res.embedder.warm_up()
        tenant = await ensure_tenant(res.sessions, f"bench-{uuid.uuid4().hex[:8]}")
        stats = await bulk_ingest(
            res.sessions,
            res.sealer,
            res.embedder,
            Chunker(res.embedder.tokenizer_file),
            tenant,
            [TextDocument(f"bench-{i}", None, t) for i, t in enumerate(texts)],
        )
        async with res.sessions.begin() as session:
            await session.execute(delete(Tenant).where(Tenant.id == tenant))
        return {
            "documents": docs,
            "chunks": stats.chunks,
            "seconds": round(stats.seconds, 1),
            "chunks_per_second": round(stats.chunks / stats.seconds, 1),
        }
    finally:
        await res.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--options", nargs="+", default=None, help="index options (default: all)")
    parser.add_argument(
        "--ingest-docs", type=int, default=300, help="documents for the throughput run (0: skip)"
    )
    args = parser.parse_args()
    settings = get_settings()
    url = Endpoints.resolve(settings).database_url.replace("postgresql+psycopg://", "postgresql://")
    chosen = options(args.rows)
    names = args.options or list(chosen)
    print(f"generating {args.rows} vectors over {TENANTS} tenants")
    vectors, tenants, texts = synthetic(args.rows)
    results: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        for name in names:
            print(f"{name}: loading and indexing")
            results[name] = run_option(conn, chosen[name], vectors, tenants, texts, args.queries)
            r = results[name]
            print(f"  build {r['build_seconds']} s")
            for scenario in (
                *(f"unfiltered_ef{ef}" for ef in EF_SWEEP if f"unfiltered_ef{ef}" in r),
                "unfiltered",
                "tenant_1pct_ann",
                "tenant_1pct",
                "unsatisfiable",
                "unsatisfiable_ann",
                "hybrid_tenant",
            ):
                s = r[scenario]
                extra = f"  recall@10 {s['recall@10']:.3f}" if "recall@10" in s else ""
                extra += f"  full k {s['full_k_share']:.2%}" if "full_k_share" in s else ""
                print(
                    f"  {scenario:<14} p50 {s['p50_ms']:7.2f}  p95 {s['p95_ms']:7.2f}"
                    f"  p99 {s['p99_ms']:7.2f} ms{extra}"
                )
    ingest = asyncio.run(ingest_throughput(args.ingest_docs)) if args.ingest_docs else None
    if ingest:
        print(
            f"ingestion: {ingest['chunks_per_second']} chunks/s"
            f" ({ingest['chunks']} chunks, embedding included)"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"retrieval-{args.rows}-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(),
                "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
                "rows": args.rows,
                "tenants": TENANTS,
                "queries": args.queries,
                "k": K,
                "options": results,
                "ingestion": ingest,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
