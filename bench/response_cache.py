"""The response cache's hit path against a model turn, in one run, on the real model server.

The benchmark starts its own stack (`turnflow up` in a scratch dir, on free ports) with the embedded
llama.cpp server. It asks N distinct deterministic questions (temperature 0), each in a new
conversation: every one is a miss, answered by the model and then cached once moderation has found
it clean. Then it asks the same N again, interleaved with N new questions: the repeats are hits, the
new ones model turns again. Reports TTFT and end-to-end p50/p95 of each kind over SSE, their ratio,
and the hit count (a repeat that was not a hit is counted, not hidden).

    .venv/bin/python -m bench.response_cache --questions 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from bench.load import RESULTS
from bench.stack import BenchStack
from infra.eval.sse_client import events
from infra.eval.stats import percentile

TOPICS = [
    "lighthouses", "tides", "bridges", "volcanoes", "glaciers", "comets", "bees", "rivers", "deserts",
    "owls", "clocks", "ferries", "maps", "forests", "storms", "caves", "harbours", "bread", "salt",
    "kites", "wells", "mills", "canals", "orchards", "lanterns", "compasses", "islands", "reefs",
    "looms", "chimneys", "anchors", "bells", "quarries", "dunes", "geysers", "marshes", "cliffs",
    "meadows", "windmills", "aqueducts",
]  # fmt: skip


async def ask(http: httpx.AsyncClient, question: str, max_tokens: int) -> dict[str, Any]:
    """One turn in a new conversation, followed to its end (the moderation verdict included, so a
    model reply is in the cache before its repeat is asked)."""
    conv = (await http.post("/v1/conversations", json={"title": "cache bench"})).json()["id"]
    body = {"content": question, "temperature": 0, "max_tokens": max_tokens}
    started = time.perf_counter()
    ttft = None
    cached = False
    async with http.stream("POST", f"/v1/conversations/{conv}/messages", json=body) as resp:
        resp.raise_for_status()
        async for event in events(resp):
            if event.event == "turn":
                cached = bool(event.data.get("cached"))
            elif event.event == "token" and ttft is None:
                ttft = (time.perf_counter() - started) * 1000
            elif event.event == "done":
                total = (time.perf_counter() - started) * 1000
            elif event.event == "error":
                raise RuntimeError(f"turn failed: {event.data}")
    return {"ttft_ms": ttft, "total_ms": total, "cached": cached}


def pcts(values: list[float]) -> dict[str, float | None]:
    return {f"p{p}": None if (v := percentile(values, p)) is None else round(v, 1) for p in (50, 95)}


async def drive(stack: BenchStack, args: argparse.Namespace) -> dict[str, Any]:
    key = await stack.ready()
    headers = {"Authorization": f"Bearer {key}"}
    questions = [f"In one sentence, what are {t}?" for t in TOPICS[: args.questions * 2]]
    first, fresh = questions[: args.questions], questions[args.questions :]
    async with httpx.AsyncClient(base_url=stack.api, headers=headers, timeout=120) as http:
        await ask(http, "Warm up: say hi.", args.max_tokens)  # not measured
        for q in first:
            await ask(http, q, args.max_tokens)
        repeats, models = [], []
        for repeat, new in zip(first, fresh, strict=True):
            repeats.append(await ask(http, repeat, args.max_tokens))
            models.append(await ask(http, new, args.max_tokens))
    hits = [r for r in repeats if r["cached"]]
    hit_ttft, model_ttft = pcts([r["ttft_ms"] for r in hits]), pcts([r["ttft_ms"] for r in models])
    return {
        "benchmark": "response_cache",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": "real",
        "questions": args.questions,
        "max_tokens": args.max_tokens,
        "repeats": len(repeats),
        "hits": len(hits),
        "hit": {"ttft_ms": hit_ttft, "total_ms": pcts([r["total_ms"] for r in hits])},
        "model_turn": {"ttft_ms": model_ttft, "total_ms": pcts([r["total_ms"] for r in models])},
        "ttft_p50_model_over_hit": round(model_ttft["p50"] / hit_ttft["p50"], 1)
        if hit_ttft["p50"] and model_ttft["p50"]
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", type=int, default=20, help="distinct questions (at most 20)")
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    args.questions = min(args.questions, len(TOPICS) // 2)
    with BenchStack("response-cache", model="real") as stack:
        result = asyncio.run(drive(stack, args))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"response-cache-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
