"""CanaryRolloutWorkflow: raise a canary's share step by step (temporal.yaml `rollouts.steps`),
hold each step for `hold` and until the canary served `min_turns` in it, judging its gates against
the base every `check_every`; climb on, or roll back to 0% by itself when a gate fails.

One per canary (workflow id `rollout-NAME`), of a model or of a prompt template. Signals `pause`,
`resume` and `abort` (which also sets the share to 0); the `state` query shows where it is. Durable:
a worker or server restart resumes at the step it was holding, with that step's start and figures.
Search attributes (`TurnflowCanary`, `TurnflowRolloutState`, `TurnflowRolloutShare`) let an operator
find rollouts in the Temporal web UI.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.contracts.rollout import (
        GateResult,
        JudgeInput,
        Judgement,
        RolloutInput,
        RolloutResult,
        RolloutStatus,
        SetShareInput,
        StepRecord,
    )

import contextlib

from workflows.policy_options import run_with_policy
from workflows.search_attributes import CANARY, ROLLOUT_SHARE, ROLLOUT_STATE


def gate_reason(gate: GateResult) -> str:
    shown = f"{gate.value:.4g}" if gate.value is not None else "?"
    return f"gate {gate.gate} failed: {shown} against a limit of {gate.limit:g}"


@workflow.defn(name="canary_rollout")
class CanaryRolloutWorkflow:
    def __init__(self) -> None:
        self._status: RolloutStatus = "running"
        self._paused = False
        self._abort: str | None = None
        self._share = 0.0
        self._steps: list[StepRecord] = []
        self._latest: Judgement | None = None
        self._total = 0

    @workflow.signal
    def pause(self) -> None:
        """Hold the current step and share until `resume` (no gate is judged meanwhile)."""
        self._paused = True

    @workflow.signal
    def resume(self) -> None:
        self._paused = False

    @workflow.signal
    def abort(self, reason: str = "") -> None:
        """Stop the rollout and set the canary's share to 0."""
        self._abort = reason or "aborted by an operator"

    @workflow.query
    def state(self) -> dict[str, Any]:
        """Status, the step (1-based) of how many, the share now, each step's start and the latest
        judgement of the gates."""
        return {
            "status": self._status,
            "paused": self._paused,
            "step": len(self._steps),
            "steps": self._total,
            "share": self._share,
            "history": [s.model_dump(mode="json") for s in self._steps],
            "latest": self._latest.model_dump(mode="json") if self._latest else None,
        }

    @workflow.run
    async def run(self, inp: RolloutInput) -> RolloutResult:
        self._total = len(inp.steps)
        last = self._total - 1
        for index, share in enumerate(inp.steps):
            if self._abort is not None:
                return await self._end(inp, "aborted", self._abort)
            started = await self._set_share(
                inp, share, "promoted" if index == last else "step", {"step": index + 1, "of": self._total}
            )
            self._steps.append(StepRecord(share=share, started=started))
            if index == last:
                break
            judgement = await self._hold(inp, started)
            if judgement is None:
                return await self._end(inp, "aborted", self._abort or "aborted")
            self._steps[-1] = self._steps[-1].model_copy(update={"judgement": judgement})
            if failed := judgement.failed:
                return await self._end(inp, "rolled_back", gate_reason(failed), failed)
        self._mark("promoted")
        return RolloutResult(
            status="promoted", name=inp.name, base=inp.base, share=self._share, steps=self._steps
        )

    async def _hold(self, inp: RolloutInput, since: datetime) -> Judgement | None:
        """Judge every check_every until the step is held long enough over enough turns, or a gate
        fails; None when aborted."""
        deadline = workflow.now() + inp.hold
        while True:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self._abort is not None or self._paused, timeout=inp.check_every
                )
            if self._abort is not None:
                return None
            if self._paused:
                self._mark("paused")
                await workflow.wait_condition(lambda: not self._paused or self._abort is not None)
                self._mark("running")
                continue
            judgement = await run_with_policy(
                inp.options,
                "rollout_judge",
                JudgeInput(
                    kind=inp.kind, name=inp.name, since=since, min_turns=inp.min_turns, gates=inp.gates
                ),
                Judgement,
            )
            self._latest = judgement
            if judgement.failed or (judgement.enough and workflow.now() >= deadline):
                return judgement

    async def _set_share(
        self, inp: RolloutInput, share: float, reason: str, details: dict[str, object]
    ) -> datetime:
        started = await run_with_policy(
            inp.options,
            "rollout_set_share",
            SetShareInput(
                kind=inp.kind, name=inp.name, share=share, actor=inp.actor, reason=reason, details=details
            ),
            datetime,
        )
        self._share = share
        self._mark(self._status)
        return started

    async def _end(
        self, inp: RolloutInput, status: RolloutStatus, reason: str, gate: GateResult | None = None
    ) -> RolloutResult:
        details: dict[str, object] = {"reason": reason}
        if gate is not None and self._latest is not None:
            details["gate"] = gate.model_dump(mode="json")
            details["judgement"] = self._latest.model_dump(mode="json")
        await self._set_share(inp, 0.0, status, details)
        self._mark(status)
        return RolloutResult(
            status=status,
            name=inp.name,
            base=inp.base,
            share=0.0,
            steps=self._steps,
            failed_gate=gate,
            reason=reason,
        )

    def _mark(self, status: RolloutStatus) -> None:
        self._status = status
        # Only when started with them (the CLI does): a bare test server may not know them.
        if workflow.info().typed_search_attributes.get(CANARY) is not None:
            workflow.upsert_search_attributes(
                [ROLLOUT_STATE.value_set(status), ROLLOUT_SHARE.value_set(f"{self._share:.0%}")]
            )
