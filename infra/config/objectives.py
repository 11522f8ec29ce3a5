"""Service level objectives and drift thresholds, as `temporal.yaml` declares them (``slo:``, ``drift:``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from infra.config.durations import Duration, parse_duration


class Objective(BaseModel):
    """One objective. ``latency``: the ``percentile`` of ``field`` (ttft or turn, from each reply's
    record) stays at or under ``threshold``; ``availability``: the share of turns answered (not failed
    on our side) stays at or above ``target``; ``cost``: cost per 1k messages stays at or under
    ``threshold_usd``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["latency", "availability", "cost"]
    description: str = ""
    field: Literal["ttft", "turn"] | None = None
    percentile: float | None = Field(default=None, gt=0, lt=100)
    threshold: Duration | None = None
    target: float | None = Field(default=None, gt=0, lt=1)
    threshold_usd: Decimal | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _complete(self) -> Objective:
        needs = {
            "latency": ("field", "percentile", "threshold"),
            "availability": ("target",),
            "cost": ("threshold_usd",),
        }[self.kind]
        missing = [name for name in needs if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.kind} objective needs {', '.join(missing)}")
        return self


class SloPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # The window reports use unless asked for another.
    window: Duration = parse_duration("1h")
    objectives: dict[str, Objective] = Field(default_factory=dict)


class DriftPolicy(BaseModel):
    """A signal is flagged when the recent window moved from the baseline window before it by more than
    its threshold, and both windows have at least ``min_samples``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: Duration = parse_duration("1h")
    baseline: Duration = parse_duration("24h")
    min_samples: int = Field(default=20, ge=1)
    # Population stability index of retrieval top scores (0.1 small, 0.25 large, by convention).
    score_psi: float = Field(default=0.25, gt=0)
    # Cosine distance between the windows' query-embedding centroids.
    centroid_distance: float = Field(default=0.15, gt=0, lt=2)
    # p95 turn latency of a model version, recent over baseline.
    latency_ratio: float = Field(default=1.5, gt=1)


class ExperimentPolicy(BaseModel):
    """How experiment reports judge a difference between two arms (db/experiments.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: Duration = parse_duration("7d")
    # Below this many turns (or verdicts, for the feedback score) in either arm, no difference is
    # called significant, whatever its p-value.
    min_samples: int = Field(default=30, ge=1)
    # Two-sided tests at 1 - confidence; the score's interval is at this confidence too.
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
