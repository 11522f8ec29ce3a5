"""Replay recorded workflow histories against the current code, with the worker's own settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle, WorkflowHistory
from temporalio.converter import PayloadCodec
from temporalio.worker import Replayer

from infra.runtime.temporal_client import data_converter
from workers.chat import WORKFLOWS, sandbox_runner
from workers.ingest import INGEST_WORKFLOWS

HISTORIES = Path(__file__).parents[1] / "histories"


async def replay(history: WorkflowHistory, codec: PayloadCodec | None = None) -> None:
    """``codec``: the deployment's, for histories whose payloads are encrypted."""
    replayer = Replayer(
        workflows=[*WORKFLOWS, *INGEST_WORKFLOWS],
        data_converter=data_converter(codec),
        workflow_runner=sandbox_runner(),
    )
    await replayer.replay_workflow(history)


async def scheduled_activities(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """The regular activities a run scheduled (local ones are markers in its history, not listed)."""
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in (await handle.fetch_history()).events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]


def load_history(name: str) -> WorkflowHistory:
    path = HISTORIES / f"{name}.json"
    return WorkflowHistory.from_json(path.stem, path.read_text())
