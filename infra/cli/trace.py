"""`turnflow trace TURN_ID`: a turn's spans as a tree, with durations and the attributes that matter."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.tree import Tree

from db.traces import SpanNode, TurnTrace, turn_trace
from infra.cli.common import console, with_resources
from infra.runtime.resources import Resources

# Shown beside a span's name when present: what the model call was, and how it went.
SHOWN = (
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.response.finish_reasons",
    "error.type",
    "http.response.status_code",
    "db.statement",
)


async def load_trace(res: Resources, turn_id: str) -> TurnTrace:
    async with res.sessions() as session:
        found = await turn_trace(session, turn_id)
    if found is None:
        raise LookupError(
            f"no trace for turn {turn_id} (the trace store keeps "
            f"{res.settings.trace_retention_h:g} h of spans; is TURNFLOW_TRACE_STORE on?)"
        )
    return found


def _label(node: SpanNode, t0: float) -> str:
    offset = node.start_time.timestamp() * 1000 - t0
    extra = [f"{k.removeprefix('gen_ai.')}={node.attributes[k]}" for k in SHOWN if k in node.attributes]
    status = " [red]ERROR[/]" if node.status == "error" else ""
    detail = f"  [dim]{' '.join(extra)[:120]}[/]" if extra else ""
    return (
        f"[bold]{node.name}[/]{status}  {node.duration_ms:.1f} ms  "
        f"[dim]+{offset:.1f} ms {node.service}[/]{detail}"
    )


def show(console: Console, found: TurnTrace) -> None:
    t0 = min(r.start_time.timestamp() * 1000 for r in found.roots)
    tree = Tree(f"turn {found.turn_id}  trace {found.trace_id}  ({found.span_count} spans)")

    def add(branch: Tree, node: SpanNode) -> None:
        sub = branch.add(_label(node, t0))
        for child in node.children:
            add(sub, child)

    for root in found.roots:
        add(tree, root)
    console.print(tree)


app = typer.Typer()


@app.command()
def trace(
    turn_id: Annotated[str, typer.Argument(help="the turn (its X-Turn-ID)")],
    as_json: Annotated[bool, typer.Option("--json", help="print the span tree as JSON")] = False,
) -> None:
    """A recent turn's trace from the trace store: API request → workflow → every step → model call,
    database and Redis calls, as a tree with durations (no collector needed)."""
    import json

    found = with_resources(lambda res: load_trace(res, turn_id))
    if as_json:
        roots = [r.as_dict() for r in found.roots]
        print(json.dumps({"turn_id": turn_id, "trace_id": found.trace_id, "spans": roots}, indent=2))
    else:
        show(console, found)
