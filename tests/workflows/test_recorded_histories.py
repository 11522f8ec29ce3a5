"""Determinism: recorded histories replay on the current code. Pinned workflows' recordings are of this
build (a new build records them again); auto-upgrade workflows' recordings are kept from every build
(tests/histories/README.md).
"""

from __future__ import annotations

import pytest
from temporalio.workflow import NondeterminismError

from tests.support.replay import HISTORIES, load_history, replay


@pytest.mark.parametrize("name", sorted(p.stem for p in HISTORIES.glob("*.json")))
async def test_recorded_history_replays(name: str) -> None:
    await replay(load_history(name))


async def test_replay_detects_a_changed_workflow() -> None:
    """The check can fail: a history whose activity order differs from the code is refused."""
    history = load_history("stack_probe")
    events = history.to_json_dict()["events"]
    scheduled = [e for e in events if "activityTaskScheduledEventAttributes" in e]
    first, second = scheduled[0], scheduled[1]
    a = first["activityTaskScheduledEventAttributes"]["activityType"]
    b = second["activityTaskScheduledEventAttributes"]["activityType"]
    a["name"], b["name"] = b["name"], a["name"]
    tampered = type(history).from_json(history.workflow_id, {"events": events})
    with pytest.raises(NondeterminismError, match="Nondeterminism"):
        await replay(tampered)
