"""The canary rollout's activities (workflows/canary_rollout.py), on the maintenance (ingest) queue:
set a canary's share for every worker, and judge the canary against its base over a step."""

from __future__ import annotations

from datetime import UTC, datetime

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.adapters.canary_shares import change_share
from activities.contracts.rollout import JudgeInput, Judgement, SetShareInput
from activities.logic.rollout_gates import judge
from db.experiments import arm_report, arm_rows
from infra.config.canaries import Canary, declared_canaries
from infra.config.policy import Policy


class RolloutActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], redis: Redis, policy: Policy) -> None:
        self.sessions = sessions
        self.redis = redis
        self.canaries = declared_canaries(policy.models, policy.prompts)
        self.confidence = policy.experiments.confidence

    def _canary(self, kind: str, name: str) -> Canary:
        canary = self.canaries.get(name)
        if canary is None or canary.kind != kind:
            # Dropped from temporal.yaml while its rollout ran: nothing to move any more.
            raise ApplicationError(
                f"no {kind} canary named {name!r} in this worker's temporal.yaml",
                type="UnknownCanary",
                non_retryable=True,
            )
        return canary

    @activity.defn(name="rollout_set_share")
    async def rollout_set_share(self, inp: SetShareInput) -> datetime:
        """Set the share (idempotent: a retry sets the same one); returns when, by this clock."""
        canary = self._canary(inp.kind, inp.name)
        await change_share(
            self.redis,
            self.sessions,
            kind=canary.kind,
            name=canary.name,
            version=canary.version,
            base=canary.base,
            declared=canary.declared_share,
            share=inp.share,
            actor=inp.actor,
            action=f"rollout.{inp.reason}",
            details={"workflow_id": activity.info().workflow_id, **inp.details},
        )
        return datetime.now(UTC)

    @activity.defn(name="rollout_judge")
    async def rollout_judge(self, inp: JudgeInput) -> Judgement:
        """The gates over the step so far: each reply recorded since the step's share was set."""
        canary = self._canary(inp.kind, inp.name)
        until = datetime.now(UTC)
        async with self.sessions() as session:
            rows = await arm_rows(
                session, canary.base, (canary.base, canary.name), inp.since, until, canary.kind
            )
        base = arm_report(canary.base, rows[canary.base], self.confidence)
        tried = arm_report(canary.name, rows[canary.name], self.confidence)
        return Judgement(
            since=inp.since,
            until=until,
            base_turns=base.turns,
            canary_turns=tried.turns,
            enough=tried.turns >= inp.min_turns,
            gates=judge(base, tried, inp.gates),
        )
