"""WebSocket users: N sockets on `/v1/ws` held open at once for a fixed time, each user asking a turn,
reading its reply as frames, pausing (mean `--think-s`, exponential) and asking again in the same
conversation. Reports sockets held, turns, errors by kind (refused frames, error events, sockets
dropped), TTFT and end-to-end p50/p95 over the socket, and the API's peak memory.

The benchmark starts its own stack (`turnflow up` in a scratch dir, on free ports) with the FAKE fast
model server (bench/fast_fake_model.py): the platform's own cost of many held sockets.

    .venv/bin/python -m bench.ws_load --sockets 256 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
import websockets

from bench.load import RESULTS, watch_memory
from bench.stack import BenchStack
from infra.eval.stats import percentile


class Tally:
    def __init__(self) -> None:
        self.held = 0
        self.most_held = 0
        self.turns = 0
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
    tally.turns += 1
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


async def level(stack: BenchStack, key: str, args: argparse.Namespace) -> dict[str, Any]:
    tally, peaks, stop = Tally(), {}, asyncio.Event()
    memory = asyncio.create_task(watch_memory(stack.data_dir, peaks, stop))
    started = time.monotonic()
    deadline = started + args.duration
    await asyncio.gather(*(user(stack.api, key, args, deadline, tally, i) for i in range(args.sockets)))
    elapsed = time.monotonic() - started
    stop.set()
    await memory

    def pcts(values: list[float]) -> dict[str, float | None]:
        return {f"p{p}": None if (v := percentile(values, p)) is None else round(v, 1) for p in (50, 95)}

    return {
        "sockets": args.sockets,
        "most_held_at_once": tally.most_held,
        "seconds": round(elapsed, 1),
        "turns": tally.turns,
        "completed": tally.completed,
        "errors": dict(tally.errors),
        "ttft_ms": pcts(tally.ttft_ms),
        "total_ms": pcts(tally.total_ms),
        "peak_rss_mb": {k: round(v, 1) for k, v in sorted(peaks.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sockets", type=int, default=256)
    parser.add_argument("--duration", type=float, default=60, help="seconds every socket is held")
    parser.add_argument("--think-s", type=float, default=30.0, help="users' mean pause between turns")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--token-ms", type=float, default=5.0, help="the fake model's pace per token")
    args = parser.parse_args()
    fake = ("--token-ms", str(args.token_ms), "--tokens", str(args.max_tokens))
    with BenchStack("ws-load", model="fake", fake_args=fake) as stack:

        async def drive() -> dict[str, Any]:
            key = await stack.ready()
            return await level(stack, key, args)

        row = asyncio.run(drive())
    result = {
        "benchmark": "ws_load",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "think_s": args.think_s,
        "max_tokens": args.max_tokens,
        **row,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"ws-load-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
