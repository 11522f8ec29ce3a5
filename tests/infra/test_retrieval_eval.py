"""Retrieval quality: the metrics, the BEIR reader, and `turnflow eval retrieval` on a small data set
of our own where hybrid search must beat vector-only and full-text-only (real Postgres and embedder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import Tenant
from infra.eval.beir import DatasetError, load_beir
from infra.eval.ir_metrics import mrr_at, ndcg_at, recall_at
from infra.eval.retrieval_eval import evaluate
from infra.eval.stats import percentile
from infra.runtime.resources import Resources
from tests.support.services import Services

MINIBEIR = Path(__file__).parents[1] / "data" / "minibeir"


def test_metrics_match_hand_computed_values() -> None:
    relevant = {"a": 1, "c": 1}
    ranked = ["b", "a", "d", "c"]
    # DCG = 1/log2(3) + 1/log2(5); IDCG = 1 + 1/log2(3)
    assert ndcg_at(ranked, relevant, 10) == pytest.approx((0.63093 + 0.43068) / 1.63093, abs=1e-4)
    assert ndcg_at(["a", "c"], relevant, 10) == 1.0
    assert ndcg_at(["x"], relevant, 10) == 0.0
    assert recall_at(ranked, relevant, 2) == 0.5 and recall_at(ranked, relevant, 4) == 1.0
    assert mrr_at(ranked, relevant, 10) == 0.5 and mrr_at(["x"], relevant, 10) == 0.0
    assert percentile([5, 1, 3, 2, 4], 50) == 3 and percentile([], 95) is None


def test_beir_reader(tmp_path: Path) -> None:
    data = load_beir(MINIBEIR)
    assert len(data.corpus) == 20 and len(data.queries) == 14 and data.qrels["q1"] == {"d1": 1}
    assert data.corpus[0].content.startswith("Pump fault E-4471\n\n")
    with pytest.raises(DatasetError, match="qrels file"):
        load_beir(MINIBEIR, split="dev")
    with pytest.raises(DatasetError, match="corpus file"):
        load_beir(tmp_path)


async def test_hybrid_beats_each_single_method_and_scratch_tenant_is_removed(resources: Resources) -> None:
    report = await evaluate(resources, load_beir(MINIBEIR))
    modes = report["modes"]
    assert modes["hybrid"]["ndcg@10"] > modes["vector"]["ndcg@10"]
    assert modes["hybrid"]["ndcg@10"] > modes["text"]["ndcg@10"]
    assert modes["hybrid"]["recall@10"] >= max(modes["vector"]["recall@10"], modes["text"]["recall@10"])
    assert report["documents"] == 20 and report["chunks"] >= 20 and report["reused"] is False
    assert modes["hybrid"]["latency_p95_ms"] > 0
    assert modes["hybrid"]["turn_latency_p95_ms"] > 0  # also timed at the turn's k
    async with resources.sessions() as session:
        assert await session.scalar(select(Tenant.id).where(Tenant.name == report["tenant"])) is None


async def test_kept_tenant_is_reused(resources: Resources) -> None:
    first = await evaluate(resources, load_beir(MINIBEIR), keep=True)
    second = await evaluate(resources, load_beir(MINIBEIR))
    assert first["reused"] is False and second["reused"] is True
    assert second["modes"]["hybrid"]["ndcg@10"] == first["modes"]["hybrid"]["ndcg@10"]


def test_cli_prints_json_for_a_beir_directory(services: Services) -> None:
    env = {**os.environ, **services.endpoints.as_env(), "TURNFLOW_DATA_DIR": str(services.data_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "infra.cli.main", "eval", "retrieval", "--dataset", str(MINIBEIR), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["split"] == "test" and report["queries"] == 14
    assert set(report["modes"]) == {"vector", "text", "hybrid"}
    missing = subprocess.run(
        [sys.executable, "-m", "infra.cli.main", "eval", "retrieval", "--dataset", "/nonexistent"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "not a BEIR data set" in missing.stdout
