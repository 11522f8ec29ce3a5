"""Tune retrieval on a BEIR split's queries (SciFact's **train**; report the test split with
`turnflow eval retrieval`): BM25's k1 and b for full-text search, then the hybrid reranker's weights.

Needs a running stack and a tenant kept by `turnflow eval retrieval --keep` on the same corpus:

    .venv/bin/turnflow eval retrieval --dataset ../shared/data/scifact --split train --keep
    .venv/bin/python -m bench.tune_retrieval --dataset ../shared/data/scifact --split train

Each (k1, b) rewrites the tenant's BM25 vectors and scores full-text search; the best pair is left in
place (and printed, to be set in db/lexicon.py). Then each query's candidates are fetched once with
what ranking reads, and the reranker's weights are scored over a grid offline.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import uuid
from dataclasses import replace
from typing import Any

from sqlalchemy import select

import db.lexicon
from activities.adapters.lexicon import refresh_lexicon
from activities.adapters.search import Candidate, LexicalSemanticReranker, SearchSettings
from bench.tenant_scale import kept_tenant, kept_tenant_parser
from db.engine import scope_to_tenant
from db.models import Document
from infra.config.settings import get_settings
from infra.eval.beir import BeirDataset, load_beir
from infra.eval.ir_metrics import ndcg_at
from infra.eval.retrieval_eval import SOURCE_PREFIX
from infra.runtime.resources import Resources

CHUNK_K = 200


class Recording:
    """A reranker that keeps each query's candidates (then ranks them as the default does)."""

    def __init__(self, settings: SearchSettings) -> None:
        self.default = LexicalSemanticReranker(settings)
        self.seen: list[Candidate] = []

    def rerank(self, query: str, candidates: list[Candidate]) -> list[Candidate]:
        self.seen = [replace(c, ranks=dict(c.ranks)) for c in candidates]
        return self.default.rerank(query, candidates)


def ranked_documents(chunks: list[Any], sources: dict[str, str]) -> list[str]:
    ranked: list[str] = []
    for chunk in chunks:
        doc = sources[str(chunk.document_id)]
        if doc not in ranked:
            ranked.append(doc)
    return ranked


async def mean_ndcg(
    res: Resources, tenant: uuid.UUID, data: BeirDataset, sources: dict[str, str], mode: Any
) -> float:
    total = 0.0
    for qid, query in data.queries.items():
        found = await res.search.search(tenant, query, CHUNK_K, mode, use_cache=False)
        total += ndcg_at(ranked_documents(found.chunks, sources), data.qrels[qid], 10)
    return total / len(data.queries)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data = load_beir(args.dataset, args.split)
    res = await Resources.open(get_settings(), lazy_temporal=True)
    try:
        tenant = await kept_tenant(res, args.tenant)
        async with res.sessions.begin() as session:
            await scope_to_tenant(session, tenant)
            rows = await session.execute(
                select(Document.id, Document.source).where(Document.tenant_id == tenant)
            )
            sources = {str(i): s[len(SOURCE_PREFIX) :] for i, s in rows.all()}
        model, version = res.embedders.default.model_id, res.embedders.default.version

        lexical: dict[str, float] = {}
        for k1, b in itertools.product(args.k1, args.b):
            db.lexicon.K1, db.lexicon.B = k1, b  # refresh sees new parameters and rewrites
            await refresh_lexicon(res.sessions, tenant, model, version)
            lexical[f"{k1}/{b}"] = round(await mean_ndcg(res, tenant, data, sources, "text"), 4)
            print(f"k1 {k1} b {b}: full-text nDCG@10 {lexical[f'{k1}/{b}']}", flush=True)
        best = max(lexical, key=lambda key: lexical[key])
        db.lexicon.K1, db.lexicon.B = (float(x) for x in best.split("/"))
        await refresh_lexicon(res.sessions, tenant, model, version)

        recording = Recording(res.search.settings)
        res.search.reranker = recording
        per_query: list[tuple[str, list[Candidate]]] = []
        for qid, query in data.queries.items():
            await res.search.search(tenant, query, CHUNK_K, "hybrid", use_cache=False)
            per_query.append((qid, recording.seen))
        hybrid: dict[str, float] = {}
        for semantic, lexical_w, fusion in itertools.product(args.semantic, args.lexical, args.fusion):
            settings = SearchSettings(
                semantic_weight=semantic, lexical_weight=lexical_w, fusion_weight=fusion
            )
            reranker = LexicalSemanticReranker(settings)
            total = 0.0
            for qid, candidates in per_query:
                ranked = reranker.rerank("", [replace(c) for c in candidates])[:CHUNK_K]
                total += ndcg_at(ranked_documents(ranked, sources), data.qrels[qid], 10)
            hybrid[f"{semantic}/{lexical_w}/{fusion}"] = round(total / len(per_query), 4)
        top = sorted(hybrid.items(), key=lambda kv: kv[1], reverse=True)[:10]
        return {
            "split": args.split,
            "bm25 k1/b": lexical,
            "best k1/b": best,
            "hybrid semantic/lexical/fusion top": top,
        }
    finally:
        await res.close()


def main() -> None:
    parser = kept_tenant_parser(__doc__, "train")
    parser.add_argument("--k1", type=float, nargs="+", default=[0.9, 1.2, 1.5])
    parser.add_argument("--b", type=float, nargs="+", default=[0.4, 0.6, 0.75])
    parser.add_argument("--semantic", type=float, nargs="+", default=[1.0])
    parser.add_argument("--lexical", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.5, 0.8])
    parser.add_argument("--fusion", type=float, nargs="+", default=[0.0, 2.0, 5.0, 10.0])
    print(json.dumps(asyncio.run(run(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
