"""Turn a policy entry from temporal.yaml into Temporal activity options, and run its fallback chain."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError, is_cancelled_exception
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from infra.config.policy import ActivityPolicy, WorkflowOptions

T = TypeVar("T")


def activity_kwargs(policy: ActivityPolicy) -> dict[str, Any]:
    retry = policy.retry
    return {
        "start_to_close_timeout": policy.start_to_close,
        "schedule_to_close_timeout": policy.schedule_to_close,
        "retry_policy": RetryPolicy(
            initial_interval=retry.initial_interval,
            backoff_coefficient=retry.backoff,
            maximum_interval=retry.maximum_interval,
            maximum_attempts=retry.maximum_attempts,
            non_retryable_error_types=list(retry.non_retryable),
        ),
    }


class StepFailed(ApplicationError):
    """An activity and its whole fallback chain failed. ``reason`` is the last attempt's error
    (for a regular activity, the cause inside its ActivityError). Uncaught, it fails the workflow."""

    def __init__(self, activity_name: str, error: BaseException) -> None:
        reason = error.cause if isinstance(error, ActivityError) and error.cause else error
        super().__init__(f"{activity_name} failed: {reason}", type="StepFailed")
        self.activity_name = activity_name
        self.reason = reason


async def run_with_policy(options: WorkflowOptions, name: str, arg: Any, result_type: type[T]) -> T:
    """Run activity ``name`` under its policy; once its retries are spent, try each fallback in order.

    Raises StepFailed when the last one fails too, asyncio.CancelledError when the run was cancelled."""
    chain = [name, *options.activity(name).fallback]
    for position, activity_name in enumerate(chain):
        policy = options.activity(activity_name)
        kwargs = activity_kwargs(policy)
        try:
            if policy.local:
                result: T = await workflow.execute_local_activity(
                    activity_name,
                    arg,
                    result_type=result_type,
                    cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                    **kwargs,
                )
                return result
            result = await workflow.execute_activity(
                activity_name,
                arg,
                result_type=result_type,
                heartbeat_timeout=policy.heartbeat,
                # On cancel, wait until the activity has really stopped: no side effects after it.
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                **kwargs,
            )
            return result
        except (ActivityError, FailureError) as exc:
            # A regular activity fails with ActivityError; a local one with its cause directly.
            if is_cancelled_exception(exc):
                raise asyncio.CancelledError from exc  # a cancelled turn is not a failure to fall back from
            if position == len(chain) - 1:
                raise StepFailed(activity_name, exc) from exc
            workflow.logger.warning(
                "activity %s failed after its retries; falling back to %s",
                activity_name,
                chain[position + 1],
            )
    raise AssertionError("unreachable: the chain is never empty")
