"""The rollout gates over hand-made arm figures: each limit, the TTFT grace, and gates without data."""

from __future__ import annotations

from dataclasses import replace

from activities.contracts.rollout import Judgement
from activities.logic.rollout_gates import judge
from db.experiments import ArmReport
from infra.config.rollouts import RolloutGates

ARM = ArmReport(
    arm="x",
    turns=100,
    error_rate=0.01,
    moderation_flag_rate=0.0,
    ttft_p95_ms=400.0,
    turn_p95_ms=2000.0,
    output_tokens=1000,
    cost_per_1k_messages_usd=1.0,
    feedback=20,
    feedback_rate=0.2,
    mean_score=0.5,
    score_interval=None,
    thumbs_down_reasons={},
)


def verdicts(canary: ArmReport, base: ArmReport = ARM) -> dict[str, bool]:
    return {g.gate: g.passed for g in judge(base, canary, RolloutGates())}


def test_a_canary_like_its_base_passes_every_gate() -> None:
    assert set(verdicts(ARM).values()) == {True}


def test_each_gate_fails_past_its_limit() -> None:
    assert not verdicts(replace(ARM, error_rate=0.07))["error_rate_increase"]  # +0.06 > 0.05
    assert verdicts(replace(ARM, error_rate=0.05))["error_rate_increase"]  # +0.04
    assert not verdicts(replace(ARM, ttft_p95_ms=700.0))["ttft_p95_ratio"]  # 1.75x and 300 ms slower
    assert not verdicts(replace(ARM, moderation_flag_rate=0.03))["moderation_flag_rate_increase"]
    assert not verdicts(replace(ARM, mean_score=0.1))["score_drop"]  # 0.4 > 0.3
    assert not verdicts(replace(ARM, cost_per_1k_messages_usd=1.6))["cost_per_1k_ratio"]


def test_a_small_slowdown_passes_whatever_the_ratio() -> None:
    fast = replace(ARM, ttft_p95_ms=20.0)
    (ttft,) = [
        g for g in judge(fast, replace(ARM, ttft_p95_ms=90.0), RolloutGates()) if g.gate == "ttft_p95_ratio"
    ]
    assert ttft.passed and ttft.value == 4.5 and "within 100" in ttft.note


def test_gates_without_figures_pass_and_say_why() -> None:
    gates = {g.gate: g for g in judge(ARM, replace(ARM, feedback=3, ttft_p95_ms=None), RolloutGates())}
    assert gates["score_drop"].passed and "fewer than 10 verdicts" in gates["score_drop"].note
    assert gates["ttft_p95_ratio"].passed and gates["ttft_p95_ratio"].note


def test_a_failed_gate_counts_only_with_enough_turns() -> None:
    gates = judge(ARM, replace(ARM, error_rate=0.5), RolloutGates())
    args = {
        "since": "2026-12-01T00:00:00Z",
        "until": "2026-12-01T01:00:00Z",
        "base_turns": 100,
        "gates": gates,
    }
    assert Judgement(**args, canary_turns=3, enough=False).failed is None
    failed = Judgement(**args, canary_turns=60, enough=True).failed
    assert failed is not None and failed.gate == "error_rate_increase"
