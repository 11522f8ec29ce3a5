"""SSE helpers for tests (the reader itself is infra/eval/sse_client.py, shared with the benchmarks)."""

from __future__ import annotations

import httpx

from infra.eval.sse_client import Event, events

__all__ = ["Event", "collect", "events", "reply_of"]


async def collect(response: httpx.Response, stop_after: int | None = None) -> list[Event]:
    """All events until the stream ends (or the first ``stop_after`` of them)."""
    seen = []
    async for event in events(response):
        seen.append(event)
        if stop_after is not None and len(seen) >= stop_after:
            break
    return seen


def reply_of(seen: list[Event]) -> str:
    """The text a client shows: tokens, starting over at each `reset`."""
    text = ""
    for event in seen:
        if event.event == "reset":
            text = ""
        elif event.event == "token":
            text += event.data["text"]
    return text
