"""Retrieval as a chat turn asks it, for one large tenant: hybrid (and each method alone) at the
turn's k with the configured candidates, no cache (the question embedded anew), on a BEIR corpus's
queries; first the corpus as ingested (SciFact: 12,291 chunks), then with near-copies of its chunks
added until the tenant holds ~100k, and with several searches at once.

Needs a running stack and a tenant kept by `turnflow eval retrieval --keep`:

    .venv/bin/turnflow eval retrieval --dataset ../shared/data/scifact --split test --keep
    .venv/bin/python -m bench.tenant_scale --dataset ../shared/data/scifact

The copies (documents named `scale-copy:*`, embeddings perturbed so that no two are equal) are
deleted at the end, and the tenant's BM25 statistics with them (the triggers count them out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text

from activities.adapters.lexicon import refresh_lexicon
from activities.adapters.search import SearchMode
from db.engine import scope_to_tenant
from infra.cli.access import tenant_id
from infra.config.settings import get_settings
from infra.eval.beir import load_beir
from infra.eval.stats import percentile
from infra.runtime.resources import Resources

RESULTS = Path(__file__).parent / "results"
COPY_PREFIX = "scale-copy:"

# Near-copies of the tenant's live chunks, `copies` times: same text, tsvector and BM25 vector, the
# embedding moved by noise of about 0.1 in norm (cosine ~0.99 to the original).
_COPY = text(
    """
    WITH docs AS (
        SELECT d.id AS src, gen_random_uuid() AS id, d.source, d.title, d.content_hash, d.size_bytes,
               d.chunk_count
        FROM documents d
        WHERE d.tenant_id = :tenant AND d.deleted_at IS NULL AND d.source NOT LIKE 'scale-copy:%'
    ), new_docs AS (
        INSERT INTO documents (id, tenant_id, source, title, mime_type, content_hash, version, status,
                               size_bytes, chunk_count, embedded_count)
        SELECT id, :tenant, :prefix || source, title, 'text/plain', content_hash, 1, 'ready', size_bytes,
               chunk_count, chunk_count
        FROM docs
        RETURNING id
    )
    INSERT INTO chunks (id, tenant_id, document_id, document_version, ordinal, text, tsv, bm25, token_count,
                        embedding, embedding_model, embedding_version, chunker, live)
    SELECT gen_random_uuid(), c.tenant_id, docs.id, 1, c.ordinal, c.text, c.tsv, c.bm25, c.token_count,
           c.embedding + (SELECT CAST(array_agg(0.01 * (random() - 0.5)) AS vector)
                          FROM generate_series(1, 384) WHERE c.id IS NOT NULL),
           c.embedding_model, c.embedding_version, c.chunker, true
    FROM chunks c JOIN docs ON docs.src = c.document_id
    WHERE c.tenant_id = :tenant AND c.live AND (SELECT count(*) FROM new_docs) > 0
    """
)


async def kept_tenant(res: Resources, name: str) -> uuid.UUID:
    try:
        return await tenant_id(res, name)
    except LookupError as exc:
        raise SystemExit(f"{exc}: keep one with `turnflow eval retrieval --keep` first") from exc


async def live_chunks(res: Resources, tenant: uuid.UUID) -> int:
    async with res.sessions.begin() as session:
        await scope_to_tenant(session, tenant)
        return int(await session.scalar(text("SELECT count(*) FROM chunks WHERE live")) or 0)


async def timed(
    res: Resources, tenant: uuid.UUID, queries: list[str], mode: SearchMode, at_once: int
) -> dict[str, Any]:
    """Each query once, ``at_once`` searches in flight; latency of each, cold (no cache)."""
    k = res.settings.retrieval_k
    latencies: list[float] = []
    pending = iter(queries)

    async def worker() -> None:
        for query in pending:
            start = time.perf_counter()
            found = await res.search.search(tenant, query, k, mode, use_cache=False)
            latencies.append((time.perf_counter() - start) * 1000)
            assert len(found.chunks) == k, (query, len(found.chunks))

    await asyncio.gather(*(worker() for _ in range(at_once)))
    deadline_ms = retrieve_deadline_ms(res)
    return {
        "p50_ms": round(percentile(latencies, 50) or 0.0, 2),
        "p95_ms": round(percentile(latencies, 95) or 0.0, 2),
        "p99_ms": round(percentile(latencies, 99) or 0.0, 2),
        "over_deadline": sum(1 for ms in latencies if ms > deadline_ms),
        "searches": len(latencies),
    }


def retrieve_deadline_ms(res: Resources) -> float:
    """The turn's retrieve step's deadline (temporal.yaml): past it the turn answers without context."""
    return res.policy.activities["retrieve"].start_to_close.total_seconds() * 1000


WARM_UP = 20  # searches before each level's timings: a serving process is warm (encoder, pages, plans)
MODES: tuple[SearchMode, ...] = ("hybrid", "vector", "text")


async def measure(res: Resources, tenant: uuid.UUID, queries: list[str], concurrency: int) -> dict[str, Any]:
    row: dict[str, Any] = {"chunks": await live_chunks(res, tenant)}
    for mode in MODES:
        await timed(res, tenant, queries[:WARM_UP], mode, 1)
    for mode in MODES:
        row[mode] = await timed(res, tenant, queries, mode, 1)
        print(f"  {row['chunks']} chunks, {mode}: {row[mode]}", flush=True)
    row[f"hybrid_{concurrency}_at_once"] = await timed(res, tenant, queries, "hybrid", concurrency)
    print(f"  {concurrency} at once: {row[f'hybrid_{concurrency}_at_once']}", flush=True)
    return row


async def remove_copies(res: Resources, tenant: uuid.UUID) -> None:
    async with res.sessions.begin() as session:
        await scope_to_tenant(session, tenant)
        await session.execute(
            text("DELETE FROM documents WHERE tenant_id = :t AND source LIKE 'scale-copy:%'"), {"t": tenant}
        )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data = load_beir(args.dataset, args.split)
    queries = list(data.queries.values())[: args.queries]
    res = await Resources.open(get_settings(), lazy_temporal=True)
    model, version = res.embedders.default.model_id, res.embedders.default.version
    try:
        tenant = await kept_tenant(res, args.tenant)
        await remove_copies(res, tenant)  # what an interrupted run left
        rows = [await measure(res, tenant, queries, args.concurrency)]
        start = time.perf_counter()
        for n in range(args.copies):
            async with res.sessions.begin() as session:
                await scope_to_tenant(session, tenant)
                await session.execute(_COPY, {"tenant": tenant, "prefix": f"{COPY_PREFIX}{n}:"})
            print(f"  copied: {await live_chunks(res, tenant)} chunks", flush=True)
        await refresh_lexicon(res.sessions, tenant, model, version)
        copy_s = round(time.perf_counter() - start, 1)
        rows.append({**await measure(res, tenant, queries, args.concurrency), "copy_seconds": copy_s})
    finally:
        await remove_copies(res, tenant)
        await refresh_lexicon(res.sessions, tenant, model, version)
        await res.close()
    return {
        "benchmark": "tenant_scale",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "dataset": str(args.dataset),
        "split": args.split,
        "queries": len(queries),
        "turn_k": res.settings.retrieval_k,
        "candidates": res.search.settings.candidates,
        "retrieve_deadline_ms": retrieve_deadline_ms(res),
        "levels": rows,
    }


def kept_tenant_parser(description: str | None, split: str) -> argparse.ArgumentParser:
    """Arguments of a bench over a tenant kept by `turnflow eval retrieval --keep`: its data set."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--split", default=split)
    parser.add_argument("--tenant", required=True, help="the kept eval tenant's name (eval-...)")
    return parser


def main() -> None:
    parser = kept_tenant_parser(__doc__, "test")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument(
        "--copies", type=int, default=7, help="near-copies of the corpus added (7: ~100k chunks)"
    )
    parser.add_argument("--concurrency", type=int, default=8)
    result = asyncio.run(run(parser.parse_args()))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"tenant-scale-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
