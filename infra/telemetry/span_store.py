"""A span exporter that keeps recent spans in Postgres, so `turnflow trace` works without a collector.

Every process (API, workers) exports here from the SDK's batch thread, on its own plain psycopg
connection: no SQLAlchemy (whose instrumentation would trace the export itself) and no event loop.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from infra.config.endpoints import libpq_url

log = logging.getLogger("turnflow.telemetry")

# The attribute that ties a span to a chat turn (set on the request, workflow and model spans).
TURN_ID = "turnflow.turn.id"
REQUEST_ID = "turnflow.request.id"
PRUNE_EVERY_S = 300.0

_INSERT = (
    "INSERT INTO trace_spans (trace_id, span_id, parent_span_id, name, kind, service, start_time,"
    " duration_ms, status, attributes, events, turn_id)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)


def _ts(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


def _ms(ns: int) -> float:
    return round(ns / 1e6, 3)


def _jsonable(attributes: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dict(attributes or {}).items()}


def span_row(span: ReadableSpan) -> tuple[Any, ...]:
    ctx = span.get_span_context()
    assert ctx is not None
    start, end = span.start_time or 0, span.end_time or span.start_time or 0
    attributes = _jsonable(span.attributes)
    events = [
        {"name": e.name, "at_ms": _ms(e.timestamp - start), "attributes": _jsonable(e.attributes)}
        for e in span.events
    ]
    return (
        format(ctx.trace_id, "032x"),
        format(ctx.span_id, "016x"),
        format(span.parent.span_id, "016x") if span.parent else None,
        span.name[:500],
        span.kind.name.lower(),
        str(span.resource.attributes.get("service.name", ""))[:100],
        _ts(start),
        _ms(end - start),
        span.status.status_code.name.lower(),
        json.dumps(attributes, default=str),
        json.dumps(events, default=str),
        attributes.get(TURN_ID),
    )


class PostgresSpanExporter(SpanExporter):
    def __init__(self, database_url: str, *, role: str | None, retention_h: float) -> None:
        self._url = libpq_url(database_url)
        self._role = role
        self._retention_h = retention_h
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self._pruned_at = 0.0

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=5)
            if self._role:
                self._conn.execute(f'SET ROLE "{self._role}"')
        return self._conn

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        rows = [span_row(s) for s in spans]
        with self._lock:
            try:
                conn = self._connection()
                with conn.cursor() as cur:
                    cur.executemany(_INSERT, rows)
                self._prune(conn)
            except psycopg.Error as exc:
                # Tracing must never take the platform down with it: drop this batch, reconnect later.
                log.warning("could not store %d spans: %s", len(rows), exc)
                self._conn = None
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def _prune(self, conn: psycopg.Connection[Any]) -> None:
        now = time.monotonic()
        if now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        conn.execute(
            "DELETE FROM trace_spans WHERE start_time < now() - make_interval(secs => %s)",
            (self._retention_h * 3600,),
        )

    def shutdown(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
