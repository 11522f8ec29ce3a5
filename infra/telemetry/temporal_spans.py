"""Temporal's OpenTelemetry plugin, less the schedule span of a local activity.

With ``add_temporal_spans`` the SDK's plugin opens ``StartActivity:X`` in the workflow when it
schedules a step and ``RunActivity:X`` where the step runs. For a local activity both are in the same
process a moment apart, so the first says nothing the second does not; at seven steps a turn they
were a fifth of its spans, and each span costs the turn CPU (bench/REPORT.md, issue 17). Here a local
step's run span hangs from the workflow's run span directly; every other span is the SDK's own.

The SDK's classes are private, so this subclasses them: tests/infra/test_tracing.py pins the shape.
"""

from __future__ import annotations

from typing import Any

import temporalio.worker
import temporalio.workflow
from temporalio.contrib.opentelemetry import OpenTelemetryInterceptor, OpenTelemetryPlugin
from temporalio.contrib.opentelemetry import _otel_interceptor as sdk


class _Outbound(sdk._TracingWorkflowOutboundInterceptor):
    def start_local_activity(
        self, input: temporalio.worker.StartLocalActivityInput
    ) -> temporalio.workflow.ActivityHandle[Any]:
        # The context still travels (the run span's parent is then the workflow's run span).
        input.headers = sdk._context_to_headers(input.headers)
        return self.next.start_local_activity(input)


class _Interceptor(OpenTelemetryInterceptor):
    def workflow_interceptor_class(
        self, input: temporalio.worker.WorkflowInterceptorClassInput
    ) -> type[sdk._TracingWorkflowInboundInterceptor]:
        base = super().workflow_interceptor_class(input)

        class Inbound(base):  # type: ignore[valid-type,misc]
            def init(self, outbound: temporalio.worker.WorkflowOutboundInterceptor) -> None:
                self.next.init(_Outbound(outbound, self._add_temporal_spans))

        return Inbound


class TurnflowTemporalTracing(OpenTelemetryPlugin):
    """``OpenTelemetryPlugin(add_temporal_spans=True)`` without local activities' schedule spans."""

    def __init__(self) -> None:
        super().__init__(add_temporal_spans=True)
        self.interceptors = [_Interceptor(add_temporal_spans=True)]
