"""Slow SSE consumers: do clients that stop reading make the worker wait, or the API hold their backlog?

The benchmark starts its own stack with the FAKE fast model server, streaming long replies (1024
tokens, padded to --token-chars each, 2 ms apart), and runs two phases of N concurrent turns:

- reading: every client reads its stream as fast as it comes (the baseline);
- stalled: every client reads up to its first token and then reads nothing until the turn is
  recorded, then drops the connection and resumes with `Last-Event-ID` on `/v1/turns/{id}/events`.

It reports the server-side turn latency (the transcript's `latency_ms`) of both phases and their ratio
(1.0: a stalled reader costs the worker nothing), the peak memory of the API and the worker above
their idle size next to the bytes the stalled clients held back, Redis' memory and the turns' stream
lengths, and whether every resumed client got every token exactly once.

    .venv/bin/python -m bench.slow_consumers                  # 32 streams
    .venv/bin/python -m bench.slow_consumers --streams 16 --token-chars 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from activities.adapters.turn_events import MAX_EVENTS, stream_key
from bench.load import rss_mb, watch_memory
from bench.plotting import pyplot, save
from bench.stack import BenchStack
from infra.eval.sse_client import events
from infra.eval.stats import percentile
from infra.stack.state import read_state

RESULTS = Path(__file__).parent / "results"
TOKENS = 1024  # the most a turn may ask of the embedded model's entry (half its context)
STALLED_RCVBUF = 16 * 1024
PHASE_TIMEOUT_S = 600  # a phase that takes longer is stuck: fail, with the progress shown


def pcts(values: list[float]) -> dict[str, float | None]:
    return {f"p{p}": None if (v := percentile(values, p)) is None else round(v, 1) for p in (50, 95)}


async def recorded(http: httpx.AsyncClient, conv: str, turn_id: str) -> dict[str, Any]:
    """The turn's reply as the transcript holds it, once it is there."""
    while True:
        resp = await http.get(f"/v1/conversations/{conv}/messages")
        resp.raise_for_status()
        for message in resp.json():
            if message["turn_id"] == turn_id and message["role"] == "assistant":
                return dict(message)
        await asyncio.sleep(0.25)


def complete(tokens: list[dict[str, Any]], reply: dict[str, Any]) -> bool:
    """Every token once, in order, and together exactly the recorded reply."""
    return [t["index"] for t in tokens] == list(range(len(tokens))) and "".join(
        t["text"] for t in tokens
    ) == reply["content"]


class Progress:
    """How many turns got their first token, were recorded and were read to the end, every 5 s."""

    def __init__(self, phase: str, total: int) -> None:
        self.phase, self.total = phase, total
        self.counts = {"streaming": 0, "recorded": 0, "finished": 0}

    def step(self, name: str) -> None:
        self.counts[name] += 1

    async def report(self) -> None:
        while True:
            await asyncio.sleep(5)
            done = ", ".join(f"{n} {v}/{self.total}" for n, v in self.counts.items())
            print(f"  {self.phase}: {done}", file=sys.stderr, flush=True)


async def one_turn(http: httpx.AsyncClient, conv: str, stall: bool, progress: Progress) -> dict[str, Any]:
    body = {"content": "Tell me a very long story.", "max_tokens": TOKENS, "temperature": 0}
    tokens: list[dict[str, Any]] = []
    turn_id, last_id = "", ""
    async with http.stream("POST", f"/v1/conversations/{conv}/messages", json=body) as resp:
        resp.raise_for_status()
        async for event in events(resp):
            if event.event == "turn":
                turn_id = event.data["turn_id"]
            elif event.event == "token":
                tokens.append(event.data)
                last_id = event.id or last_id
                if len(tokens) == 1:
                    progress.step("streaming")
                if stall:
                    break  # read nothing more while the turn runs...
            elif event.event in ("done", "error"):
                break
        reply = await recorded(http, conv, turn_id)
        progress.step("recorded")
    # ...then drop the connection and resume after the last event seen.
    if stall:
        url = f"/v1/turns/{turn_id}/events"
        async with http.stream("GET", url, headers={"Last-Event-ID": last_id}) as resp:
            resp.raise_for_status()
            async for event in events(resp):
                if event.event == "token":
                    tokens.append(event.data)
                elif event.event in ("done", "error"):
                    break
    progress.step("finished")
    return {
        "turn_id": turn_id,
        "latency_ms": reply["latency_ms"],
        "complete": complete(tokens, reply),
        "bytes": sum(len(json.dumps(t)) for t in tokens),
    }


async def phase(
    http: httpx.AsyncClient, redis: Redis, data_dir: Path, streams: int, stall: bool
) -> dict[str, Any]:
    convs = [
        (await http.post("/v1/conversations", json={"title": "slow consumers"})).json()["id"]
        for _ in range(streams)
    ]
    state = read_state(data_dir)
    pids = state.pids if state else {}
    idle = {name: rss_mb(pid) or 0.0 for name, pid in pids.items()}
    redis_idle = (await redis.info("memory"))["used_memory"]
    peaks: dict[str, float] = {}
    stop = asyncio.Event()
    memory = asyncio.create_task(watch_memory(data_dir, peaks, stop))
    redis_peak = redis_idle

    async def watch_redis() -> None:
        nonlocal redis_peak
        while not stop.is_set():
            redis_peak = max(redis_peak, (await redis.info("memory"))["used_memory"])
            await asyncio.sleep(0.5)

    redis_watch = asyncio.create_task(watch_redis())
    progress = Progress("stalled" if stall else "reading", streams)
    reporting = asyncio.create_task(progress.report())
    started = time.monotonic()
    try:
        turns = await asyncio.wait_for(
            asyncio.gather(*(one_turn(http, c, stall, progress) for c in convs)), PHASE_TIMEOUT_S
        )
    finally:
        reporting.cancel()
        stop.set()
        await memory
        await redis_watch
    lengths = [await redis.xlen(stream_key(t["turn_id"])) for t in turns]
    return {
        "phase": "stalled" if stall else "reading",
        "streams": streams,
        "seconds": round(time.monotonic() - started, 1),
        "server_latency_ms": pcts([t["latency_ms"] for t in turns]),
        "complete": sum(t["complete"] for t in turns),
        "stream_mb": round(sum(t["bytes"] for t in turns) / 2**20, 1),
        "rss_growth_mb": {
            name: round(peaks.get(name, 0.0) - idle.get(name, 0.0), 1) for name in ("api", "worker")
        },
        "redis_growth_mb": round((redis_peak - redis_idle) / 2**20, 1),
        "max_stream_entries": max(lengths),
    }


def plot(result: dict[str, Any], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    phases = result["phases"]
    names = [p["phase"] for p in phases]
    fig, (lat, mem) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.35
    xs = range(len(names))
    for i, pct in enumerate(("p50", "p95")):
        lat.bar([x + i * width for x in xs], [p["server_latency_ms"][pct] for p in phases], width, label=pct)
    lat.set(
        xticks=[x + width / 2 for x in xs], xticklabels=names, ylabel="ms", title="server-side turn latency"
    )
    lat.legend()
    series = {
        "stream sent": [p["stream_mb"] for p in phases],
        "API RSS growth": [p["rss_growth_mb"]["api"] for p in phases],
        "worker RSS growth": [p["rss_growth_mb"]["worker"] for p in phases],
        "Redis growth": [p["redis_growth_mb"] for p in phases],
    }
    width = 0.2
    for i, (label, values) in enumerate(series.items()):
        mem.bar([x + i * width for x in xs], values, width, label=label)
    mem.set(xticks=[x + 1.5 * width for x in xs], xticklabels=names, ylabel="MB", title="memory")
    mem.legend()
    fig.suptitle(f"turnflow: {result['streams']} SSE clients reading vs stalled, {result['date'][:10]}")
    save(fig, path)
    return True


def client(api: str, key: str, streams: int, stall: bool) -> httpx.AsyncClient:
    """Stalled clients also get a small receive buffer, as a phone on a slow link has: their backlog
    cannot hide in this machine's kernel, it has to wait on the server's side."""
    options = [(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RCVBUF)] if stall else []
    return httpx.AsyncClient(
        base_url=api,
        headers={"Authorization": f"Bearer {key}"},
        timeout=httpx.Timeout(300, connect=10),
        transport=httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=streams * 3 + 10), socket_options=options
        ),
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    fake = ("--tokens", str(TOKENS), "--token-ms", "2", "--token-chars", str(args.token_chars))
    with BenchStack("slow-consumers", model="fake", fake_args=fake) as stack:

        async def drive() -> list[dict[str, Any]]:
            key = await stack.ready()
            redis = Redis.from_url(f"redis://127.0.0.1:{stack.ports['redis']}/0")
            rows = []
            for stall in (False, True):
                async with client(stack.api, key, args.streams, stall) as http:
                    if not stall:
                        await phase(http, redis, stack.data_dir, 2, stall=False)  # warm-up, not reported
                    row = await phase(http, redis, stack.data_dir, args.streams, stall)
                print(json.dumps(row), file=sys.stderr)
                rows.append(row)
            await redis.aclose()
            return rows

        phases = asyncio.run(drive())
    reading, stalled = phases
    ratio = None
    if reading["server_latency_ms"]["p50"] and stalled["server_latency_ms"]["p50"]:
        ratio = round(stalled["server_latency_ms"]["p50"] / reading["server_latency_ms"]["p50"], 2)
    return {
        "benchmark": "slow_consumers",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "streams": args.streams,
        "tokens_per_turn": TOKENS,
        "token_chars": args.token_chars,
        "stalled_client_rcvbuf": STALLED_RCVBUF,
        "stream_max_entries": MAX_EVENTS,
        "phases": phases,
        "server_latency_p50_stalled_over_reading": ratio,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--token-chars", type=int, default=400, help="each token's text, padded")
    args = parser.parse_args()
    result = run(args)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"slow-consumers-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    plotted = plot(result, stem.with_suffix(".png"))
    for row in result["phases"]:
        print(
            f"{row['phase']:>8}: {row['streams']} streams, server p50/p95 "
            f"{row['server_latency_ms']['p50']}/{row['server_latency_ms']['p95']} ms, "
            f"{row['complete']}/{row['streams']} complete, {row['stream_mb']} MB streamed, "
            f"RSS growth API {row['rss_growth_mb']['api']} / worker {row['rss_growth_mb']['worker']} MB, "
            f"Redis +{row['redis_growth_mb']} MB"
        )
    print(f"stalled / reading, server-side p50: {result['server_latency_p50_stalled_over_reading']}")
    print(f"wrote {stem.with_suffix('.json')}" + (f" and {stem.with_suffix('.png')}" if plotted else ""))


if __name__ == "__main__":
    main()
