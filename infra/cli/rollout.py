"""`turnflow models rollout`: start a canary's rollout, follow it, pause, resume or abort it, and
see every rollout's state (workflows/canary_rollout.py)."""

from __future__ import annotations

import asyncio
import getpass
import json
from typing import Annotated, Any

import typer
from rich.table import Table
from temporalio.client import WorkflowHandle
from temporalio.exceptions import WorkflowAlreadyStartedError

from infra.cli.common import console, with_resources
from infra.runtime.resources import Resources
from infra.runtime.rollouts import rollout_id, rollout_input, rollout_state, rollout_states, start_rollout

ACTIONS = ("status", "pause", "resume", "abort")


def _latest_line(state: dict[str, Any]) -> str:
    # A running rollout's latest check, or (once ended) the judgement its last step ended on.
    history = state.get("history") or []
    latest = state.get("latest") or (history[-1].get("judgement") if history else None) or {}
    if not latest:
        return ""
    failing = [g["gate"] for g in latest.get("gates", []) if not g["passed"]]
    turns = f"canary {latest['canary_turns']} / base {latest['base_turns']} turns"
    return f"{turns}; failing: {', '.join(failing)}" if failing else f"{turns}; gates pass"


def state_table(states: list[dict[str, Any]]) -> Table:
    table = Table(title="canary rollouts (newest first)")
    for column in ("canary", "status", "step", "share", "latest judgement", "reason"):
        table.add_column(column)
    for s in states:
        step = f"{s.get('step', '?')}" + (f"/{s['steps']}" if s.get("steps") else "")
        share = s.get("share")
        table.add_row(
            s["name"],
            s.get("status", "?") + (" (paused)" if s.get("paused") else ""),
            step,
            f"{share:.0%}" if isinstance(share, float | int) else "",
            _latest_line(s),
            s.get("reason", ""),
        )
    return table


async def follow(handle: WorkflowHandle[Any, Any]) -> dict[str, Any]:
    """Print each change of step, share or status until the rollout ends; returns its result."""
    result = asyncio.create_task(handle.result())
    shown: tuple[object, ...] = ()
    while not result.done():
        await asyncio.wait({result}, timeout=2.0)
        try:
            state = await handle.query("state")
        except Exception:  # the query can race the run's end; the result says the rest
            continue
        now = (state["step"], state["share"], state["status"], state["paused"])
        if now != shown:
            shown = now
            console.print(
                f"step {state['step']}/{state['steps']}: {state['share']:.0%}, {state['status']}"
                + (" (paused)" if state["paused"] else "")
            )
    return dict(result.result().model_dump(mode="json"))


async def run_rollout(
    res: Resources, action_or_name: str, name: str | None, wait: bool, overrides: dict[str, object]
) -> dict[str, Any] | list[dict[str, Any]] | None:
    client = res.temporal
    if action_or_name == "status":
        if name:
            return [await rollout_state(client, name)]
        return await rollout_states(client)
    if action_or_name in ACTIONS:
        if not name:
            raise LookupError(f"`turnflow models rollout {action_or_name}` needs a canary's name")
        handle = client.get_workflow_handle(rollout_id(name))
        signal = {"pause": "pause", "resume": "resume", "abort": "abort"}[action_or_name]
        args = [f"aborted by cli:{getpass.getuser()}"] if signal == "abort" else []
        await handle.signal(signal, *args)
        console.print(f"{rollout_id(name)}: {signal} sent")
        return None
    canary = action_or_name
    inp = rollout_input(res.policy, canary, f"cli:{getpass.getuser()}", overrides)
    try:
        handle = await start_rollout(client, res.policy, inp)
    except WorkflowAlreadyStartedError:
        raise LookupError(
            f"{rollout_id(canary)} is already running: `turnflow models rollout status {canary}`"
        ) from None
    plan = " → ".join(f"{s:.0%}" for s in inp.steps)
    console.print(
        f"started {handle.id}: {inp.kind} {canary} against {inp.base}, {plan}; each step held "
        f"{inp.hold} and {inp.min_turns} canary turns (follow it in the Temporal web UI)"
    )
    return await follow(handle) if wait else None


def rollout(
    action_or_name: Annotated[
        str, typer.Argument(metavar="NAME|status|pause|resume|abort", help="a canary, or what to do")
    ],
    name: Annotated[str | None, typer.Argument(help="the canary, after status/pause/resume/abort")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow the rollout until it ends")] = False,
    steps: Annotated[
        str | None, typer.Option(help="shares to climb, e.g. 0.1,0.5,1 (default: temporal.yaml)")
    ] = None,
    hold: Annotated[str | None, typer.Option(help="hold each step this long, e.g. 10m")] = None,
    min_turns: Annotated[int | None, typer.Option(help="canary turns each step needs")] = None,
    check_every: Annotated[str | None, typer.Option(help="judge the gates this often, e.g. 30s")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON only")] = False,
) -> None:
    """Roll a canary (a model or a prompt template) out by itself: `turnflow models rollout NAME`
    raises its share along temporal.yaml's steps, judging its gates against the base at each, and
    rolls it back to 0% when one fails. `status [NAME]` shows every rollout (or one); `pause`,
    `resume` and `abort NAME` signal it (abort sets the share to 0)."""
    try:
        shares = [float(s) for s in steps.split(",")] if steps else None
    except ValueError:
        raise typer.BadParameter(f"{steps!r}: shares separated by commas, e.g. 0.1,0.5,1") from None
    given: dict[str, object] = {
        "steps": shares,
        "hold": hold,
        "min_turns": min_turns,
        "check_every": check_every,
    }
    overrides = {k: v for k, v in given.items() if v is not None}
    out = with_resources(lambda res: run_rollout(res, action_or_name, name, wait, overrides))
    if isinstance(out, list):
        if as_json:
            print(json.dumps(out, indent=2, default=str))
        else:
            console.print(state_table(out))
    elif isinstance(out, dict):
        if as_json:
            print(json.dumps(out, indent=2, default=str))
        else:
            console.print(f"{out['status']}: {out['name']} at {out['share']:.0%}. {out.get('reason', '')}")
        if out["status"] != "promoted":
            raise typer.Exit(2)
