"""Experiment reports: a canary against its base, arm by arm, from each reply's own record.

Two kinds. A model canary: a turn belongs to the arm its conversation was assigned (`route.arm`,
activities/logic/routing.py), served or not: a canary whose breaker is open, or whose call failed
over to the base, counts that turn against the canary (intent to treat); an error is a failed turn
or one another model than the arm's answered. A prompt template canary: the arm is
`route.prompt_arm`, and an error is a failed turn (which model answered is not the template's doing).
Per arm: turns, errors, moderation flags, latency, tokens, cost, and users' verdicts.

Each difference comes with a stated test, two-sided at 1 - confidence, and is never called
significant below `min_samples` per arm: rates by the two-proportion z-test, the feedback score by
Welch's t-test, TTFT and turn latency by the Mann-Whitney U test, cost per message by Welch's t-test.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import numpy as np
from scipy import stats
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Feedback, Message
from infra.config.objectives import ExperimentPolicy


@dataclass
class ArmRows:
    """What one arm's replies recorded, as lists a hand count can check."""

    turns: int = 0
    errors: int = 0
    flagged: int = 0
    ttft_ms: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    output_tokens: int = 0
    costs: list[float] = field(default_factory=list)
    scores: list[int] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    rated_turns: int = 0


@dataclass(frozen=True)
class ArmReport:
    arm: str
    turns: int
    error_rate: float | None
    moderation_flag_rate: float | None
    ttft_p95_ms: float | None
    turn_p95_ms: float | None
    output_tokens: int
    cost_per_1k_messages_usd: float | None
    feedback: int
    feedback_rate: float | None
    mean_score: float | None
    score_interval: tuple[float, float] | None
    thumbs_down_reasons: dict[str, int]


@dataclass(frozen=True)
class Difference:
    """The canary less the base (ratio for latency), the test's p-value, and the verdict."""

    metric: str
    base: float | None
    canary: float | None
    delta: float | None
    test: str
    p_value: float | None
    significant: bool
    note: str = ""


@dataclass(frozen=True)
class ExperimentReport:
    name: str
    kind: str
    base: str
    since: datetime
    until: datetime
    confidence: float
    min_samples: int
    arms: list[ArmReport]
    differences: list[Difference]


def percentile(values: list[float], p: float) -> float | None:
    """Nearest rank (numpy's inverted CDF), as the SLO report computes it in SQL."""
    return float(np.percentile(values, p, method="inverted_cdf")) if values else None


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _mean_interval(values: list[int], confidence: float) -> tuple[float, float] | None:
    if len(values) < 2:
        return None
    # statistics.stdev is exact on integers (scipy's tstd warns on identical verdicts).
    mean, sd = sum(values) / len(values), statistics.stdev(values)
    half = stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * sd / math.sqrt(len(values))
    return (mean - half, mean + half)


def arm_report(arm: str, rows: ArmRows, confidence: float) -> ArmReport:
    return ArmReport(
        arm=arm,
        turns=rows.turns,
        error_rate=_rate(rows.errors, rows.turns),
        moderation_flag_rate=_rate(rows.flagged, rows.turns),
        ttft_p95_ms=percentile(rows.ttft_ms, 95),
        turn_p95_ms=percentile(rows.latency_ms, 95),
        output_tokens=rows.output_tokens,
        cost_per_1k_messages_usd=1000 * sum(rows.costs) / rows.turns if rows.turns else None,
        feedback=len(rows.scores),
        feedback_rate=_rate(rows.rated_turns, rows.turns),
        mean_score=sum(rows.scores) / len(rows.scores) if rows.scores else None,
        score_interval=_mean_interval(rows.scores, confidence),
        thumbs_down_reasons=dict(sorted(rows.reasons.items())),
    )


def _two_proportions(a: int, n_a: int, b: int, n_b: int) -> float | None:
    """Two-sided p-value of the pooled two-proportion z-test; None when it is undefined."""
    if not n_a or not n_b:
        return None
    pooled = (a + b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 1.0  # both arms all 0 or all 1: no difference
    z = (b / n_b - a / n_a) / se
    return float(2 * stats.norm.sf(abs(z)))


def _p(result: Any) -> float | None:
    value = float(result.pvalue)
    return None if math.isnan(value) else value


def compare(base: ArmRows, canary: ArmRows, policy: ExperimentPolicy) -> list[Difference]:
    alpha, least = 1 - policy.confidence, policy.min_samples

    def judged(
        metric: str,
        b: float | None,
        c: float | None,
        delta: float | None,
        test: str,
        p: float | None,
        n_b: int,
        n_c: int,
    ) -> Difference:
        enough = min(n_b, n_c) >= least
        note = "" if enough else f"fewer than {least} samples in an arm: no decision"
        return Difference(metric, b, c, delta, test, p, bool(enough and p is not None and p < alpha), note)

    def rate_diff(metric: str, part: str) -> Difference:
        a, b = getattr(base, part), getattr(canary, part)
        rb, rc = _rate(a, base.turns), _rate(b, canary.turns)
        delta = rc - rb if rb is not None and rc is not None else None
        p = _two_proportions(a, base.turns, b, canary.turns)
        return judged(metric, rb, rc, delta, "two-proportion z-test", p, base.turns, canary.turns)

    def latency_diff(metric: str, values: str) -> Difference:
        xb, xc = getattr(base, values), getattr(canary, values)
        pb, pc = percentile(xb, 95), percentile(xc, 95)
        ratio = pc / pb if pb and pc is not None else None
        p = _p(stats.mannwhitneyu(xc, xb, alternative="two-sided")) if xb and xc else None
        return judged(metric, pb, pc, ratio, "Mann-Whitney U (ratio of p95s)", p, len(xb), len(xc))

    def welch(metric: str, xb: list[float], xc: list[float], scale: float = 1.0) -> Difference:
        mb = scale * sum(xb) / len(xb) if xb else None
        mc = scale * sum(xc) / len(xc) if xc else None
        delta = mc - mb if mb is not None and mc is not None else None
        p = None
        if len(xb) > 1 and len(xc) > 1:
            if len(set(xb)) == len(set(xc)) == 1:
                p = 1.0 if xb[0] == xc[0] else 0.0  # no spread in either arm: the difference is exact
            else:
                p = _p(stats.ttest_ind(xc, xb, equal_var=False))
        return judged(metric, mb, mc, delta, "Welch's t-test", p, len(xb), len(xc))

    return [
        rate_diff("error_rate", "errors"),
        rate_diff("moderation_flag_rate", "flagged"),
        latency_diff("ttft_p95_ms", "ttft_ms"),
        latency_diff("turn_p95_ms", "latency_ms"),
        welch("mean_score", [float(s) for s in base.scores], [float(s) for s in canary.scores]),
        welch("cost_per_1k_messages_usd", base.costs, canary.costs, scale=1000.0),
    ]


ExperimentKind = Literal["model", "prompt"]


async def arm_rows(
    session: AsyncSession,
    base: str,
    arms: tuple[str, ...],
    since: datetime,
    until: datetime,
    kind: ExperimentKind = "model",
) -> dict[str, ArmRows]:
    """Each arm's replies in [since, until) among the conversations whose chosen base was ``base``."""
    record, member = ("arm", "model") if kind == "model" else ("prompt_arm", "template")
    arm = Message.route[record][member].astext
    replies = (
        await session.execute(
            select(
                Message.id,
                arm,
                Message.route["served_by"].astext,
                Message.finish_reason == "error",
                Message.redacted,
                Message.ttft_ms,
                Message.latency_ms,
                Message.output_tokens,
                Message.cost_usd,
            ).where(
                Message.role == "assistant",
                Message.created_at >= since,
                Message.created_at < until,
                # A turn its user cancelled says nothing about either arm (as in the SLOs).
                Message.finish_reason.is_distinct_from("cancelled"),
                Message.route[record]["base"].astext == base,
                arm.in_(arms),
            )
        )
    ).all()
    found = {name: ArmRows() for name in arms}
    by_id: dict[Any, ArmRows] = {}
    for mid, name, served, failed, redacted, ttft, latency, out, cost in replies:
        rows = found[name]
        by_id[mid] = rows
        rows.turns += 1
        if failed or (kind == "model" and served != name):
            rows.errors += 1
        else:
            # Latency of the arm's own model: a turn another model answered says nothing about it.
            rows.ttft_ms += [ttft] if ttft is not None else []
            rows.latency_ms += [latency] if latency is not None else []
        rows.flagged += bool(redacted)
        rows.output_tokens += out or 0
        rows.costs.append(float(cost or Decimal(0)))
    if by_id:
        verdicts = await session.execute(
            select(Feedback.message_id, Feedback.score, Feedback.reason).where(Feedback.message_id.in_(by_id))
        )
        rated: set[Any] = set()
        for mid, score, reason in verdicts:
            rows = by_id[mid]
            rows.scores.append(score)
            if score < 0:
                rows.reasons[reason or "none"] += 1
            if mid not in rated:
                rated.add(mid)
                rows.rated_turns += 1
    return found


async def experiment_report(
    session: AsyncSession,
    name: str,
    base: str,
    since: datetime,
    until: datetime,
    policy: ExperimentPolicy,
    kind: ExperimentKind = "model",
) -> ExperimentReport:
    """The canary ``name`` against ``base`` over [since, until)."""
    rows = await arm_rows(session, base, (base, name), since, until, kind)
    return ExperimentReport(
        name=name,
        kind=kind,
        base=base,
        since=since,
        until=until,
        confidence=policy.confidence,
        min_samples=policy.min_samples,
        arms=[arm_report(arm, rows[arm], policy.confidence) for arm in (base, name)],
        differences=compare(rows[base], rows[name], policy),
    )
