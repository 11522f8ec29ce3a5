"""Create or update the Temporal Schedules declared in temporal.yaml (idempotent; run at worker start)."""

from __future__ import annotations

import logging

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from infra.config.policy import Policy

log = logging.getLogger(__name__)


def build_schedule(policy: Policy, name: str) -> Schedule:
    sched = policy.schedules[name]
    # Scheduled workflows take an input whose only required field is `options`.
    arg = {"options": policy.options_for(sched.workflow).model_dump(mode="json")}
    return Schedule(
        action=ScheduleActionStartWorkflow(
            sched.workflow,
            arg,
            id=f"schedule-{name}",
            task_queue=policy.queue(sched.task_queue),
        ),
        spec=ScheduleSpec(cron_expressions=[sched.cron]),
        state=ScheduleState(paused=sched.paused, note="managed by turnflow from temporal.yaml"),
    )


async def ensure_schedules(client: Client, policy: Policy) -> list[str]:
    applied = []
    for name in policy.schedules:
        schedule = build_schedule(policy, name)
        try:
            await client.create_schedule(name, schedule)
            log.info("created schedule %s", name)
        except ScheduleAlreadyRunningError:

            def _replace(_: ScheduleUpdateInput, new: Schedule = schedule) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=new)

            await client.get_schedule_handle(name).update(_replace)
            log.info("updated schedule %s", name)
        applied.append(name)
    return applied
