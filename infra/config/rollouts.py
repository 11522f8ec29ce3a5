"""Canary rollouts as temporal.yaml declares them (``rollouts:``): the steps a canary's share climbs,
how long and over how many turns each step is held, and the gates it must pass to climb on."""

from __future__ import annotations

import itertools

from pydantic import BaseModel, ConfigDict, Field, field_validator

from infra.config.durations import Duration, parse_duration


class RolloutGates(BaseModel):
    """The canary against its base over one step. A gate with no figures on either side (no
    verdicts yet, no successful turn to time) passes and says so; the error rate gate comes first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Canary error rate less the base's (a turn failed, or another model had to answer it).
    max_error_rate_increase: float = Field(default=0.05, ge=0, le=1)
    # Canary TTFT p95 over the base's; a canary at most ttft_grace_ms slower passes whatever the
    # ratio (a ratio of two small times is noise).
    max_ttft_p95_ratio: float = Field(default=1.5, gt=0)
    ttft_grace_ms: float = Field(default=100.0, ge=0)
    # Canary share of replies redacted by moderation less the base's.
    max_moderation_flag_rate_increase: float = Field(default=0.02, ge=0, le=1)
    # Base mean feedback score (-1 to +1) less the canary's; judged only with min_feedback verdicts per arm.
    max_score_drop: float = Field(default=0.3, ge=0, le=2)
    min_feedback: int = Field(default=10, ge=1)
    # Canary cost per 1k messages over the base's.
    max_cost_per_1k_ratio: float = Field(default=1.5, gt=0)


class RolloutPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Shares of the base's conversations, rising; the last is where the rollout ends (promoted).
    steps: list[float] = Field(default_factory=lambda: [0.01, 0.05, 0.25, 0.5, 1.0], min_length=1)
    # Each step but the last is held at least this long and until the canary served min_turns in it.
    hold: Duration = parse_duration("30m")
    min_turns: int = Field(default=50, ge=1)
    # How often the gates are judged while a step is held (a failing gate rolls back at once).
    check_every: Duration = parse_duration("1m")
    gates: RolloutGates = RolloutGates()

    @field_validator("steps")
    @classmethod
    def _rising(cls, steps: list[float]) -> list[float]:
        if any(not 0 < s <= 1 for s in steps):
            raise ValueError("each step is a share in (0, 1]")
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError("steps must rise")
        return steps
