"""Reading the trace store: a turn's trace, as a tree of spans."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import TraceSpan


@dataclass
class SpanNode:
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    service: str
    start_time: datetime
    duration_ms: float
    status: str
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    children: list[SpanNode] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "name": self.name,
            "kind": self.kind,
            "service": self.service,
            "start_time": self.start_time.isoformat(),
            "duration_ms": self.duration_ms,
            "status": self.status,
            "attributes": self.attributes,
            "events": self.events,
            "children": [c.as_dict() for c in self.children],
        }


@dataclass
class TurnTrace:
    turn_id: str
    trace_id: str
    roots: list[SpanNode]
    span_count: int


async def turn_trace(session: AsyncSession, turn_id: str) -> TurnTrace | None:
    """The trace that started the turn (a retried POST that joined it has a trace of its own)."""
    trace_id = await session.scalar(
        select(TraceSpan.trace_id).where(TraceSpan.turn_id == turn_id).order_by(TraceSpan.start_time).limit(1)
    )
    if trace_id is None:
        return None
    rows = (
        await session.scalars(
            select(TraceSpan).where(TraceSpan.trace_id == trace_id).order_by(TraceSpan.start_time)
        )
    ).all()
    return TurnTrace(turn_id, trace_id, span_tree(rows), len(rows))


def span_tree(rows: Any) -> list[SpanNode]:
    """Parents before children, siblings by start time; a span whose parent was not kept is a root."""
    nodes = {
        r.span_id: SpanNode(
            r.span_id,
            r.parent_span_id,
            r.name,
            r.kind,
            r.service,
            r.start_time,
            r.duration_ms,
            r.status,
            r.attributes,
            r.events,
        )
        for r in rows
    }
    roots: list[SpanNode] = []
    for node in sorted(nodes.values(), key=lambda n: n.start_time):
        parent = nodes.get(node.parent_span_id or "")
        (parent.children if parent else roots).append(node)
    return roots


async def delete_spans_of_turns(session: AsyncSession, turn_ids: list[str]) -> int:
    """Every stored span of these turns (erasure: span attributes can hold what a turn was about)."""
    gone = await session.execute(delete(TraceSpan).where(TraceSpan.turn_id.in_(turn_ids)))
    return int(gone.rowcount)  # type: ignore[attr-defined]
