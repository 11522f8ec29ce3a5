"""What sealing tenants' text at rest costs a turn (activities/adapters/sealed_text.py).

Two measurements in one run:

1. **The sealing work of one turn**, in this process: every seal and open a turn of the capacity
   benchmark does (32 tokens, k = 4 of 50 + 50 candidates, a 20-message history), at its sizes, timed
   over many repetitions. The keys come from a stand-in keyring holding one unwrapped key, as the real
   one serves every call but the first of each minute from its cache.
2. **The whole platform with sealing on and off**: bench/load.py's capacity run (FAKE fast model) at 1
   and 32 users, once with TURNFLOW_AT_REST_ENCRYPTION=false and once on, each on a stack of its own:
   CPU ms per turn by process, throughput and TTFT side by side.

    .venv/bin/python -m bench.sealing
    .venv/bin/python -m bench.sealing --skip-load      # the in-process part only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from activities.adapters.sealed_text import SealedText
from infra.eval.stats import percentile

RESULTS = Path(__file__).parent / "results"
TOKENS, CANDIDATES, K, HISTORY = 32, 100, 4, 20
CHUNK = "Lighthouses use Fresnel lenses to gather the lamp's light into a beam. " * 14  # ~1 KB, 200 tokens
MESSAGE = "Why do lighthouses have lenses, and how far can their light be seen at night? " * 2


class OneKeyStandIn:
    """A STAND-IN keyring: one tenant's key, already unwrapped (the real keyring's cached path)."""

    def __init__(self) -> None:
        self.cipher = AESGCM(AESGCM.generate_key(256))

    async def for_encrypting(self, tenant: uuid.UUID) -> tuple[str, AESGCM]:
        return f"tenant/{tenant}/1", self.cipher

    async def for_decrypting(self, kid: str) -> AESGCM:
        return self.cipher


async def one_turn(sealer: SealedText, tenant: uuid.UUID, sealed: dict[str, Any]) -> None:
    """A turn's seals and opens, as the code paths make them."""
    # Worker: each event sealed once (turn, tokens, done); API: each opened once as it follows.
    for event in sealed["events"]:
        await sealer.open(tenant, await sealer.seal(tenant, event))
    # Retrieval: every candidate's text opened; the top k sealed into the result cache.
    await sealer.open_all(tenant, sealed["candidates"])
    await sealer.seal(tenant, sealed["result"])
    # The prompt's history from the recent context; the exchange persisted and cached.
    await sealer.open_all(tenant, sealed["history"])
    await sealer.seal_all(tenant, [MESSAGE, MESSAGE + MESSAGE])
    await sealer.seal_all(tenant, sealed["exchange"])


async def in_process(repetitions: int) -> dict[str, Any]:
    sealer = SealedText(OneKeyStandIn())  # type: ignore[arg-type]
    tenant = uuid.uuid4()
    # What is sealed or opened, made beforehand: the JSON exists with or without sealing.
    sealed = {
        "events": [json.dumps({"text": " lens", "index": i}) for i in range(TOKENS + 2)],
        "result": json.dumps([{"text": CHUNK, "id": str(uuid.uuid4())}] * K),
        "exchange": [json.dumps({"role": "user", "content": MESSAGE})] * 2,
        "candidates": await sealer.seal_all(tenant, [CHUNK] * CANDIDATES),
        "history": await sealer.seal_all(
            tenant, [json.dumps({"role": "user", "content": MESSAGE})] * HISTORY
        ),
    }
    for _ in range(20):  # warm
        await one_turn(sealer, tenant, sealed)
    times = []
    for _ in range(repetitions):
        start = time.process_time()
        await one_turn(sealer, tenant, sealed)
        times.append((time.process_time() - start) * 1000)
    operations = 2 * (TOKENS + 2) + CANDIDATES + 1 + HISTORY + 4
    return {
        "repetitions": repetitions,
        "operations_per_turn": operations,
        "cpu_ms_per_turn": {f"p{p}": round(percentile(times, p) or 0.0, 3) for p in (50, 95)},
        "shape": {
            "tokens": TOKENS,
            "candidates": CANDIDATES,
            "k": K,
            "history": HISTORY,
            "chunk_chars": len(CHUNK),
        },
    }


def on_and_off(levels: list[int], duration: float) -> dict[str, Any]:
    from bench import load

    args = argparse.Namespace(
        model="fake", levels=levels, duration=duration, max_tokens=32, think_s=0.0, token_ms=5.0
    )
    runs = {}
    for label, value in (("off", "false"), ("on", "true")):
        os.environ["TURNFLOW_AT_REST_ENCRYPTION"] = value  # each stack copies the environment
        print(f"sealing {label}: bench.load at {levels} users", file=sys.stderr, flush=True)
        runs[label] = load.run(args)["levels"]
    os.environ.pop("TURNFLOW_AT_REST_ENCRYPTION")
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repetitions", type=int, default=2000)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--skip-load", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "benchmark": "sealing",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "in_process": asyncio.run(in_process(args.repetitions)),
        "load": None if args.skip_load else on_and_off(args.levels, args.duration),
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"sealing-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    mine = result["in_process"]
    print(f"a turn's sealing: {mine['operations_per_turn']} operations, {mine['cpu_ms_per_turn']} ms CPU")
    for label, rows in (result["load"] or {}).items():
        for r in rows:
            print(
                f"sealing {label}: {r['users']} users, {r['throughput_turns_per_s']} turns/s,"
                f" CPU ms per turn {r['cpu_ms_per_turn']}"
            )


if __name__ == "__main__":
    main()
