"""A small SSE client reader: parses `id:`, `event:` and `data:` lines as they stream in (JSON data;
the OpenAI route's `[DONE]` stays a string), and a server's `retry:` (its ask to reconnect, with
Last-Event-ID, after that many ms) as an event `retry`. Used by the benchmarks and the tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Event:
    id: str | None
    event: str
    data: Any


async def events(response: httpx.Response) -> AsyncIterator[Event]:
    eid: str | None = None
    name = "message"
    data: list[str] = []
    retry: int | None = None
    async for line in response.aiter_lines():
        if line == "":
            if data:
                raw = "\n".join(data)
                yield Event(eid, name, raw if raw == "[DONE]" else json.loads(raw))
            elif retry is not None:
                yield Event(None, "retry", retry)
            eid, name, data, retry = None, "message", [], None
        elif line.startswith(":"):
            continue  # keep-alive ping
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "id":
                eid = value
            elif field == "event":
                name = value
            elif field == "data":
                data.append(value)
            elif field == "retry" and value.isdigit():
                retry = int(value)
