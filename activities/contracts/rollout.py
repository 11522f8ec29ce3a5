"""The canary rollout workflow's data (workflows/canary_rollout.py): shares, gates and their figures."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from infra.config.policy import WorkflowOptions
from infra.config.rollouts import RolloutGates

RolloutStatus = Literal["running", "paused", "promoted", "rolled_back", "aborted"]


class RolloutInput(BaseModel):
    options: WorkflowOptions
    kind: Literal["model", "prompt"]
    name: str
    base: str
    steps: list[float]
    hold: timedelta
    min_turns: int
    check_every: timedelta
    gates: RolloutGates
    # Who started it (the audit log's actor for the shares it sets).
    actor: str = "rollout"


class SetShareInput(BaseModel):
    kind: Literal["model", "prompt"]
    name: str
    share: float
    actor: str
    reason: str
    details: dict[str, object] = Field(default_factory=dict)


class JudgeInput(BaseModel):
    kind: Literal["model", "prompt"]
    name: str
    # When the step's share was set (the set-share activity's clock, not the workflow's: under a
    # time-skipping test server the workflow's clock runs ahead of the turns' timestamps).
    since: datetime
    min_turns: int
    gates: RolloutGates


class GateResult(BaseModel):
    gate: str
    passed: bool
    base: float | None
    canary: float | None
    # What the limit is compared with: a difference or a ratio, canary against base.
    value: float | None
    limit: float
    note: str = ""


class Judgement(BaseModel):
    since: datetime
    until: datetime
    base_turns: int
    canary_turns: int
    # The canary served min_turns in the step: only then does a failed gate count.
    enough: bool
    gates: list[GateResult]

    @property
    def failed(self) -> GateResult | None:
        if not self.enough:
            return None
        return next((g for g in self.gates if not g.passed), None)


class StepRecord(BaseModel):
    share: float
    started: datetime
    judgement: Judgement | None = None


class RolloutResult(BaseModel):
    status: RolloutStatus
    name: str
    base: str
    share: float
    steps: list[StepRecord]
    failed_gate: GateResult | None = None
    reason: str = ""
