"""Whole chat turns on one large tenant: concurrent users asking a BEIR corpus's queries through the
API of a running stack, each turn retrieving from the tenant kept by `turnflow eval retrieval --keep`
(SciFact: 12,291 chunks) and streaming its reply from the configured model. Counts the turns degraded
by retrieval (answered without context because the retrieve step failed or ran past its deadline in
temporal.yaml), with TTFT and end-to-end latency and errors.

    make run                                                                   # in one terminal
    .venv/bin/turnflow eval retrieval --dataset ../shared/data/scifact --split test --keep
    .venv/bin/python -m bench.tenant_turns --dataset ../shared/data/scifact --tenant eval-…

It makes a chat key for the tenant for the run and revokes it at the end; the conversations it holds
stay in the tenant (they go with it when the eval tenant is deleted).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import time
from datetime import UTC, datetime
from typing import Any

from bench.tenant_scale import RESULTS, kept_tenant, kept_tenant_parser, live_chunks
from db.access import create_key, revoke_key
from infra.config.settings import get_settings
from infra.eval.beir import load_beir
from infra.eval.stats import percentile
from infra.eval.synth import Synth
from infra.runtime.resources import Resources


async def run(args: Any) -> dict[str, Any]:
    settings = get_settings()
    data = load_beir(args.dataset, args.split)
    res = await Resources.open(settings, lazy_temporal=True)
    try:
        tenant = await kept_tenant(res, args.tenant)
        chunks = await live_chunks(res, tenant)
        key, row = await create_key(res.sessions, tenant, "bench-tenant-turns", ["chat"], None)
        api = args.api or f"http://127.0.0.1:{settings.api_port}"
        traffic = Synth(
            api,
            key,
            max_tokens=args.max_tokens,
            max_in_flight=args.users,
            seed=args.users,
            questions=list(data.queries.values()),
        )
        deadline = time.monotonic() + args.duration
        started = time.monotonic()

        async def user() -> None:
            while time.monotonic() < deadline:
                await traffic.conversation()

        try:
            await asyncio.gather(*(user() for _ in range(args.users)))
        finally:
            elapsed = time.monotonic() - started
            await traffic.aclose()
            await revoke_key(res.sessions, row.prefix)
    finally:
        await res.close()
    t = traffic.tally

    def pcts(values: list[float]) -> dict[str, float | None]:
        return {f"p{p}": None if (v := percentile(values, p)) is None else round(v, 1) for p in (50, 95, 99)}

    return {
        "benchmark": "tenant_turns",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "dataset": str(args.dataset),
        "chunks": chunks,
        "users": args.users,
        "max_tokens": args.max_tokens,
        # The stack's model server: the embedded llama.cpp one, or what TURNFLOW_TGI_URL names (e.g.
        # bench/fast_fake_model.py, to load the platform with more turns than a CPU model serves).
        "model_server": settings.tgi_url or f"embedded {settings.model_name}",
        "seconds": round(elapsed, 1),
        "turns": t.started,
        "completed": t.completed,
        "degraded": t.degraded,
        "errors": dict(t.errors),
        "throughput_turns_per_s": round(t.completed / elapsed, 2),
        "ttft_ms": pcts(t.ttft_ms),
        "total_ms": pcts(t.total_ms),
    }


def main() -> None:
    parser = kept_tenant_parser(__doc__, "test")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of turns")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--api", help="the API's base URL (default: this machine's, on the API port)")
    result = asyncio.run(run(parser.parse_args()))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"tenant-turns-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
