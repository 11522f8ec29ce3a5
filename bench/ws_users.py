"""WebSocket users for bench/load.py (`--transport ws`): each holds a socket on `/v1/ws` for the
whole level, asks a turn, reads its reply as frames, pauses (mean `--think-s`, exponential) and asks
again in the same conversation. The tally counts sockets held at once and errors by kind (refused
frames, error events, sockets dropped)."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter
from typing import Any

import httpx
import websockets


class Tally:
    def __init__(self) -> None:
        self.held = 0
        self.most_held = 0
        self.started = 0
        self.completed = 0
        self.ttft_ms: list[float] = []
        self.total_ms: list[float] = []
        self.errors: Counter[str] = Counter()


async def user(
    api: str, key: str, args: argparse.Namespace, deadline: float, tally: Tally, seed: int
) -> None:
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=30) as http:
        conv = (await http.post("/v1/conversations", json={"title": "ws load"})).json()["id"]
    url = api.replace("http://", "ws://") + "/v1/ws"
    try:
        async with websockets.connect(url, additional_headers=headers, open_timeout=60) as ws:
            tally.held += 1
            tally.most_held = max(tally.most_held, tally.held)
            try:
                # Users arrive over a think time, as people do, not all in the same millisecond.
                await asyncio.sleep(rng.uniform(0, min(args.think_s, args.duration / 2)))
                while time.monotonic() < deadline:
                    await ask(ws, conv, args, tally)
                    pause = rng.expovariate(1 / args.think_s) if args.think_s else 0.0
                    await asyncio.sleep(max(0.0, min(pause, deadline - time.monotonic())))
                # Held to the end of the level with all the others: the socket count is concurrent.
                await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            finally:
                tally.held -= 1
    except (OSError, websockets.WebSocketException) as exc:
        tally.errors[f"socket: {type(exc).__name__}"] += 1


async def ask(ws: Any, conv: str, args: argparse.Namespace, tally: Tally) -> None:
    tally.started += 1
    started = time.monotonic()
    frame = {
        "type": "turn",
        "conversation_id": conv,
        "content": "Tell me about lighthouses.",
        "max_tokens": args.max_tokens,
    }
    await ws.send(json.dumps(frame))
    first: float | None = None
    turn_id = None
    while True:
        got = json.loads(await asyncio.wait_for(ws.recv(), 120))
        if got["type"] == "accepted":
            turn_id = got["turn_id"]
        elif got.get("turn_id") != turn_id:
            continue  # an earlier turn's moderation verdict
        elif got["type"] == "token" and first is None:
            first = time.monotonic()
            tally.ttft_ms.append((first - started) * 1000)
        elif got["type"] == "done":
            tally.completed += 1
            tally.total_ms.append((time.monotonic() - started) * 1000)
            return
        elif got["type"] == "error":
            tally.errors[f"frame: {got.get('code') or got['data'].get('code')}"] += 1
            return
