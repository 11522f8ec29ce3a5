"""Replay recorded workflow histories against the current code, with the worker's own settings."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workers.chat import WORKFLOWS, sandbox_runner
from workers.ingest import INGEST_WORKFLOWS

HISTORIES = Path(__file__).parent / "histories"


async def replay(history: WorkflowHistory) -> None:
    replayer = Replayer(
        workflows=[*WORKFLOWS, *INGEST_WORKFLOWS],
        data_converter=pydantic_data_converter,
        workflow_runner=sandbox_runner(),
    )
    await replayer.replay_workflow(history)


def load_history(name: str) -> WorkflowHistory:
    path = HISTORIES / f"{name}.json"
    return WorkflowHistory.from_json(path.stem, path.read_text())
