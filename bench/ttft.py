"""Time to first token, inter-token latency and total latency: turnflow's SSE API versus the same request
sent straight to the model server, in one run, interleaved, at several concurrencies.

Run against a running stack (`make run` in another terminal):

    .venv/bin/python -m bench.ttft                  # concurrency 1, 8, 32
    .venv/bin/python -m bench.ttft --levels 1 --requests 10

The direct request carries exactly the messages turnflow sends for a new conversation without
documents (its system prompt and the user's text), the same max_tokens and temperature 0, so the
difference is the platform's own cost: workflow start, the quick steps, Redis and SSE. It first measures
Temporal's own floor against the same server (bench/temporal_floor.py) and reports it beside the overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx

from bench.temporal_floor import describe as floor_describe
from db.access import read_demo_key
from infra.config.endpoints import Endpoints
from infra.config.prompts import DEFAULT_SYSTEM_PROMPT as SYSTEM_PROMPT
from infra.config.settings import get_settings

PROMPT = "In two sentences, why do lighthouses have lenses?"
RESULTS = Path(__file__).parent / "results"


@dataclass
class Sample:
    ttft_ms: float
    total_ms: float
    gaps_ms: list[float]
    tokens: int
    events: int = 0


@dataclass
class Series:
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0


async def direct(http: httpx.AsyncClient, model_url: str, model: str, max_tokens: int) -> Sample:
    body = {
        "model": model,
        "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    start = time.perf_counter()
    stamps: list[float] = []
    async with http.stream("POST", f"{model_url}/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                stamps.append(time.perf_counter())
    end = time.perf_counter()
    return _sample(start, stamps, end, len(stamps))


async def through_turnflow(http: httpx.AsyncClient, api: str, max_tokens: int) -> Sample:
    conv = (await http.post(f"{api}/v1/conversations", json={"title": "bench"})).json()["id"]
    start = time.perf_counter()
    stamps: list[float] = []
    produced = 0
    async with http.stream(
        "POST",
        f"{api}/v1/conversations/{conv}/messages",
        json={"content": PROMPT, "max_tokens": max_tokens, "temperature": 0},
    ) as resp:
        resp.raise_for_status()
        event = ""
        async for line in resp.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                if event == "token":
                    stamps.append(time.perf_counter())
                elif event == "done":
                    produced = json.loads(line[6:])["usage"]["output_tokens"]
                    break
                elif event == "error":
                    raise RuntimeError(line)
    end = time.perf_counter()
    sample = _sample(start, stamps, end, produced)
    sample.events = len(stamps)
    return sample


def _sample(start: float, stamps: list[float], end: float, tokens: int) -> Sample:
    if not stamps:
        raise RuntimeError("no tokens")
    gaps = [(b - a) * 1000 for a, b in pairwise(stamps)]
    return Sample((stamps[0] - start) * 1000, (end - start) * 1000, gaps, tokens, len(stamps))


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(series: Series) -> dict[str, Any]:
    ttft = [s.ttft_ms for s in series.samples]
    total = [s.total_ms for s in series.samples]
    gaps = [g for s in series.samples for g in s.gaps_ms]
    out: dict[str, Any] = {"n": len(series.samples), "errors": series.errors}
    for name, values in (("ttft_ms", ttft), ("inter_token_ms", gaps), ("total_ms", total)):
        out[name] = {f"p{p}": round(pct(values, p), 2) for p in (50, 95, 99)}
    tokens = sum(s.tokens for s in series.samples)
    events = sum(s.events for s in series.samples)
    out["events_per_token"] = round(events / tokens, 3) if tokens else None
    return out


async def level(
    api: str, model_url: str, model: str, concurrency: int, requests: int, max_tokens: int
) -> dict[str, Any]:
    ours, theirs = Series(), Series()
    limits = httpx.Limits(max_connections=concurrency * 2 + 4)
    # The stack's demo key (`turnflow up` writes it); the model server ignores the header.
    headers = {
        "Authorization": f"Bearer {os.environ.get('TURNFLOW_API_KEY') or read_demo_key(get_settings())}"
    }
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(300, connect=10), limits=limits, headers=headers
    ) as http:

        async def one(i: int) -> None:
            # Interleave: even requests go direct first, odd ones through turnflow first.
            order = [("direct", theirs), ("turnflow", ours)]
            for name, series in order if i % 2 == 0 else order[::-1]:
                try:
                    if name == "direct":
                        series.samples.append(await direct(http, model_url, model, max_tokens))
                    else:
                        series.samples.append(await through_turnflow(http, api, max_tokens))
                except (httpx.HTTPError, RuntimeError, KeyError):
                    series.errors += 1

        # Warm both paths (model cache, connection pools) before measuring.
        await one(0)
        ours.samples.clear()
        theirs.samples.clear()
        queue = list(range(requests))

        async def runner() -> None:
            while queue:
                await one(queue.pop())

        await asyncio.gather(*(runner() for _ in range(concurrency)))
    t, d = summary(ours), summary(theirs)
    overhead = {
        metric: {p: round(t[metric][p] - d[metric][p], 2) for p in ("p50", "p95", "p99")}
        for metric in ("ttft_ms", "inter_token_ms", "total_ms")
    }
    return {
        "concurrency": concurrency,
        "turnflow": t,
        "direct": d,
        "overhead": overhead,
        "ttft_ratio_p50": round(t["ttft_ms"]["p50"] / d["ttft_ms"]["p50"], 3),
    }


def print_level(r: dict[str, Any]) -> None:
    c = r["concurrency"]
    print(
        f"\nconcurrency {c}: n={r['turnflow']['n']} (errors turnflow {r['turnflow']['errors']}, "
        f"direct {r['direct']['errors']}); events/token {r['turnflow']['events_per_token']}"
    )
    print(f"{'metric':<16}{'':>4}{'turnflow':>12}{'direct':>12}{'overhead':>12}")
    for metric in ("ttft_ms", "inter_token_ms", "total_ms"):
        for p in ("p50", "p95", "p99"):
            print(
                f"{metric:<16}{p:>4}{r['turnflow'][metric][p]:>12.1f}{r['direct'][metric][p]:>12.1f}"
                f"{r['overhead'][metric][p]:>12.1f}"
            )


def temporal_floor() -> dict[str, Any]:
    """Temporal's own floor on this machine, measured now against the same server (bench/temporal_floor.py),
    in a process of its own: its worker must not share this one's event loop or CPU time."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.temporal_floor", "--json"], capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


async def main() -> None:
    settings = get_settings()
    endpoints = Endpoints.resolve(settings)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--api", default=f"http://{settings.api_host}:{settings.api_port}")
    parser.add_argument("--model-url", default=endpoints.model_url)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=None, help="per level (default: max(20, 2 x level))")
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()

    floor = temporal_floor()
    print(floor_describe(floor))
    results = []
    for c in args.levels:
        r = await level(
            args.api, args.model_url, settings.model_name, c, args.requests or max(20, 2 * c), args.max_tokens
        )
        print_level(r)
        results.append(r)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"ttft-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(),
                "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
                "prompt": PROMPT,
                "max_tokens": args.max_tokens,
                "temporal_floor": floor,
                "levels": results,
            },
            indent=2,
        )
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    asyncio.run(main())
