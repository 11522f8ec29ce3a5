"""Record the stack probe's history from a running stack (`turnflow up`) into tests/histories/."""

from __future__ import annotations

import asyncio
import uuid

from infra.resources import Resources
from infra.settings import get_settings
from tests.replay import HISTORIES
from workflows.stack_probe import StackProbeInput, StackProbeResult


async def main() -> None:
    res = await Resources.open(get_settings())
    try:
        workflow_id = f"record-stack-probe-{uuid.uuid4()}"
        await res.temporal.execute_workflow(
            "stack_probe",
            StackProbeInput(options=res.policy.options_for("stack_probe")),
            id=workflow_id,
            task_queue=res.policy.queue("chat"),
            result_type=StackProbeResult,
        )
        history = await res.temporal.get_workflow_handle(workflow_id).fetch_history()
        HISTORIES.mkdir(exist_ok=True)
        (HISTORIES / "stack_probe.json").write_text(history.to_json())
        print(f"recorded {len(history.events)} events into {HISTORIES / 'stack_probe.json'}")
    finally:
        await res.close()


if __name__ == "__main__":
    asyncio.run(main())
