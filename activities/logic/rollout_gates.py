"""A rollout's gates: the canary against its base over one step, from the experiment report's own
figures (db/experiments.py), each against its limit in temporal.yaml (`rollouts.gates`).

A gate without figures on one side (no verdicts yet, no successful turn to time, a base that costs
nothing) passes and says why: the error rate gate catches a canary that never answers."""

from __future__ import annotations

from activities.contracts.rollout import GateResult
from db.experiments import ArmReport
from infra.config.rollouts import RolloutGates


def _increase(gate: str, base: float | None, canary: float | None, limit: float) -> GateResult:
    if canary is None:
        return GateResult(
            gate=gate, passed=True, base=base, canary=None, value=None, limit=limit, note="no canary turns"
        )
    value = canary - (base or 0.0)
    return GateResult(gate=gate, passed=value <= limit, base=base, canary=canary, value=value, limit=limit)


def _ratio(
    gate: str, base: float | None, canary: float | None, limit: float, missing: str, grace: float = 0.0
) -> GateResult:
    if not base or canary is None:
        return GateResult(
            gate=gate, passed=True, base=base, canary=canary, value=None, limit=limit, note=missing
        )
    value = canary / base
    within_grace = canary - base <= grace
    return GateResult(
        gate=gate,
        passed=value <= limit or within_grace,
        base=base,
        canary=canary,
        value=value,
        limit=limit,
        note=f"within {grace:g} of the base" if value > limit and within_grace else "",
    )


def judge(base: ArmReport, canary: ArmReport, gates: RolloutGates) -> list[GateResult]:
    """Every gate, in order: error rate, TTFT p95 ratio, moderation flag rate, feedback score, cost."""
    least = gates.min_feedback
    if min(base.feedback, canary.feedback) < least or base.mean_score is None or canary.mean_score is None:
        score = GateResult(
            gate="score_drop",
            passed=True,
            base=base.mean_score,
            canary=canary.mean_score,
            value=None,
            limit=gates.max_score_drop,
            note=f"fewer than {least} verdicts in an arm",
        )
    else:
        drop = base.mean_score - canary.mean_score
        score = GateResult(
            gate="score_drop",
            passed=drop <= gates.max_score_drop,
            base=base.mean_score,
            canary=canary.mean_score,
            value=drop,
            limit=gates.max_score_drop,
        )
    return [
        _increase("error_rate_increase", base.error_rate, canary.error_rate, gates.max_error_rate_increase),
        _ratio(
            "ttft_p95_ratio",
            base.ttft_p95_ms,
            canary.ttft_p95_ms,
            gates.max_ttft_p95_ratio,
            "no answered turn to time in an arm",
            gates.ttft_grace_ms,
        ),
        _increase(
            "moderation_flag_rate_increase",
            base.moderation_flag_rate,
            canary.moderation_flag_rate,
            gates.max_moderation_flag_rate_increase,
        ),
        score,
        _ratio(
            "cost_per_1k_ratio",
            base.cost_per_1k_messages_usd,
            canary.cost_per_1k_messages_usd,
            gates.max_cost_per_1k_ratio,
            "no cost on the base side",
        ),
    ]
