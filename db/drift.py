"""Drift signals: the recent window against the baseline window before it.

- retrieval scores, per tenant: the population stability index of each turn's top score (bins at the
  baseline's quantiles, one per 10 samples of the smaller window, 2 to 10), flagged only when a
  two-sample Kolmogorov-Smirnov test also says the move is not sampling noise (p < 0.01);
- query embeddings, per tenant: cosine distance between the two windows' centroids (pgvector's avg);
- latency, per model version: p95 turn latency, recent over baseline.
Each is flagged past its threshold in `temporal.yaml` (``drift:``), given enough samples on both sides.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import BaseModel
from sqlalchemy import Float, and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import Message, RetrievalObservation, Tenant
from infra.config.objectives import DriftPolicy

MAX_BINS = 10
SIGNIFICANCE = 0.01
_EPSILON = 1e-4  # an empty bin counts as this share, so the index stays finite


class DriftSignal(BaseModel):
    signal: str  # retrieval_scores, query_centroid or latency
    subject: str  # a tenant's name, or model@version
    recent_samples: int
    baseline_samples: int
    recent: float | None  # what moved: mean top score, -, or p95 ms
    baseline: float | None
    score: float | None  # the index, the distance or the ratio
    threshold: float
    flagged: bool
    note: str = ""
    p_value: float | None = None  # retrieval scores: the KS test's


def population_stability(baseline: list[float], recent: list[float]) -> float:
    """PSI = sum over bins of (r - b) ln(r / b), with bins cut at the baseline's quantiles. Fewer
    samples, fewer bins: PSI's noise grows with bins over samples."""
    bins = max(2, min(MAX_BINS, min(len(baseline), len(recent)) // 10))
    edges = np.unique(np.quantile(np.asarray(baseline), np.linspace(0, 1, bins + 1)[1:-1]))

    def shares(values: list[float]) -> np.ndarray:
        counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
        return np.maximum(counts / max(len(values), 1), _EPSILON)

    b, r = shares(baseline), shares(recent)
    return float(np.sum((r - b) * np.log(r / b)))


def _signal(
    policy: DriftPolicy,
    signal: str,
    subject: str,
    n: tuple[int, int],
    values: tuple[float | None, ...],
    threshold: float,
) -> DriftSignal:
    recent, baseline, score = values
    enough = min(n) >= policy.min_samples and score is not None and math.isfinite(score)
    return DriftSignal(
        signal=signal,
        subject=subject,
        recent_samples=n[0],
        baseline_samples=n[1],
        recent=None if recent is None else round(recent, 6),
        baseline=None if baseline is None else round(baseline, 6),
        score=None if score is None else round(score, 6),
        threshold=threshold,
        flagged=bool(enough and score is not None and score > threshold),
        note="" if enough else f"fewer than {policy.min_samples} samples on a side",
    )


async def drift_report(session: AsyncSession, policy: DriftPolicy, now: datetime) -> list[DriftSignal]:
    recent_from = now - policy.window
    baseline_from = recent_from - policy.baseline
    signals: list[DriftSignal] = []

    obs = RetrievalObservation
    scores = await session.execute(
        select(Tenant.name, obs.at >= recent_from, obs.top_score)
        .join(Tenant, Tenant.id == obs.tenant_id)
        .where(obs.at >= baseline_from, obs.at < now, obs.top_score.is_not(None))
    )
    by_tenant: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for name, is_recent, score in scores:
        by_tenant[name][0 if is_recent else 1].append(float(score or 0))
    for name, (recent, baseline) in sorted(by_tenant.items()):
        psi = population_stability(baseline, recent) if recent and baseline else None
        means = (float(np.mean(recent)) if recent else None, float(np.mean(baseline)) if baseline else None)
        found = _signal(
            policy, "retrieval_scores", name, (len(recent), len(baseline)), (*means, psi), policy.score_psi
        )
        if recent and baseline:
            p = float(_ks_2samp(baseline, recent).pvalue)
            found = found.model_copy(
                update={"p_value": round(p, 6), "flagged": found.flagged and p < SIGNIFICANCE}
            )
        signals.append(found)

    recent_window = and_(obs.at >= recent_from, obs.at < now)
    baseline_window = and_(obs.at >= baseline_from, obs.at < recent_from)
    has_vector = obs.query_embedding.is_not(None)
    centroids = await session.execute(
        select(
            Tenant.name,
            func.count().filter(recent_window, has_vector),
            func.count().filter(baseline_window, has_vector),
            # pgvector's <=>: cosine distance, here between the windows' mean embeddings.
            func.avg(obs.query_embedding)
            .filter(recent_window)
            .op("<=>", return_type=Float)(func.avg(obs.query_embedding).filter(baseline_window)),
        )
        .join(Tenant, Tenant.id == obs.tenant_id)
        .where(obs.at >= baseline_from, obs.at < now)
        .group_by(Tenant.name)
        .order_by(Tenant.name)
    )
    for name, n_recent, n_baseline, distance in centroids:
        dist = None if distance is None else float(distance)
        signals.append(
            _signal(
                policy,
                "query_centroid",
                name,
                (int(n_recent), int(n_baseline)),
                (None, None, dist),
                policy.centroid_distance,
            )
        )

    reply = Message
    answered = and_(reply.role == "assistant", reply.latency_ms.is_not(None), reply.model_id.is_not(None))
    p95 = func.percentile_disc(0.95).within_group(reply.latency_ms.asc())
    latency = await session.execute(
        select(
            reply.model_id,
            func.coalesce(reply.model_version, ""),
            func.count().filter(reply.created_at >= recent_from),
            func.count().filter(reply.created_at < recent_from),
            p95.filter(reply.created_at >= recent_from),
            p95.filter(reply.created_at < recent_from),
        )
        .where(answered, reply.created_at >= baseline_from, reply.created_at < now)
        .group_by(reply.model_id, reply.model_version)
        .order_by(reply.model_id, reply.model_version)
    )
    for model, version, n_recent, n_baseline, recent_p95, baseline_p95 in latency:
        ratio = recent_p95 / baseline_p95 if recent_p95 is not None and baseline_p95 else None
        signals.append(
            _signal(
                policy,
                "latency",
                f"{model}@{version}" if version else str(model),
                (int(n_recent), int(n_baseline)),
                (recent_p95, baseline_p95, ratio),
                policy.latency_ratio,
            )
        )
    return signals


class DriftOut(BaseModel):
    """A drift report as the API and the CLI give it."""

    since: datetime
    until: datetime
    baseline_since: datetime
    flagged: int
    signals: list[DriftSignal]


async def compute_drift(sessions: async_sessionmaker[AsyncSession], policy: DriftPolicy) -> DriftOut:
    now = datetime.now(UTC)
    async with sessions() as session:
        signals = await drift_report(session, policy, now)
    return DriftOut(
        since=now - policy.window,
        until=now,
        baseline_since=now - policy.window - policy.baseline,
        flagged=sum(s.flagged for s in signals),
        signals=signals,
    )


def _ks_2samp(a: list[float], b: list[float]) -> Any:
    # Imported when a drift report is asked for: scipy.stats costs a process ~90 MB.
    from scipy.stats import ks_2samp

    return ks_2samp(a, b)
