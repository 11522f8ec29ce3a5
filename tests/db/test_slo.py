"""SLO reports match a hand computation over the recorded turns; who may see what."""

from __future__ import annotations

import json
import math
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from infra.config.endpoints import default_gguf
from infra.config.policy import load_policy
from tests.support.api_harness import ApiServer, isolated_settings, model_entry, run_cli
from tests.support.services import Services, db_rows, free_port


def nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(p / 100 * len(ordered)) - 1]


def by_hand(rows: list[tuple[Any, ...]], policy_file: Path) -> dict[str, dict[str, Any]]:
    """Each objective of the policy, computed here from (ttft_ms, latency_ms, finish_reason, error,
    cost_usd) rows the way the README defines it."""
    out: dict[str, dict[str, Any]] = {}
    for name, o in load_policy(policy_file).slo.objectives.items():
        if o.kind == "latency":
            assert o.threshold is not None and o.percentile is not None
            column = 0 if o.field == "ttft" else 1
            values = [r[column] for r in rows if r[column] is not None and r[2] not in ("error", "cancelled")]
            limit = o.threshold.total_seconds() * 1000
            good = sum(v <= limit for v in values)
            value = nearest_rank(values, o.percentile)
            allowed = (1 - o.percentile / 100) * len(values)
            out[name] = {
                "value": value,
                "eligible": len(values),
                "good": good,
                "met": value <= limit,
                "budget": round(1 - (len(values) - good) / allowed, 4),
            }
        elif o.kind == "availability":
            assert o.target is not None
            answered = [r for r in rows if r[2] not in ("error", "cancelled")]
            ours = [r for r in rows if r[2] == "error" and (r[3] or {}).get("retryable") is True]
            eligible = len(answered) + len(ours)
            value = len(answered) / eligible
            out[name] = {
                "value": value,
                "eligible": eligible,
                "good": len(answered),
                "met": value >= o.target,
                "budget": round(1 - len(ours) / ((1 - o.target) * eligible), 4),
            }
        else:
            assert o.threshold_usd is not None
            per_1k = sum((r[4] or Decimal(0) for r in rows), Decimal(0)) * 1000 / len(rows)
            out[name] = {
                "value": float(per_1k),
                "eligible": len(rows),
                "met": per_1k <= o.threshold_usd,
                "budget": round(float(1 - per_1k / o.threshold_usd), 4),
            }
    return out


async def test_slo_report_matches_a_hand_count_over_the_recorded_turns(
    services: Services, tmp_path: Path
) -> None:
    tenant = f"slo-{uuid.uuid4().hex[:8]}"
    serving = isolated_settings(services, tmp_path)
    # Another deployment of the same platform whose only model is down: its turns fail on our side.
    down = isolated_settings(
        services,
        tmp_path,
        models={"down": model_entry(f"http://127.0.0.1:{free_port()}")},
        model_path=default_gguf(),  # counts its tokens with the local tokenizer
    )
    async with ApiServer(serving) as api, ApiServer(down) as broken:
        headers = await api.headers_for(tenant)
        conv = await api.conversation(headers)
        for n in range(5):
            resp = await api.client.post(
                f"/v1/conversations/{conv}/messages",
                json={"content": f"Count to {n + 2}.", "stream": False, "max_tokens": 6},
                headers=headers,
            )
            assert resp.status_code == 200 and resp.json()["status"] == "completed", resp.text
        failed = await broken.client.post(
            f"/v1/conversations/{conv}/messages",
            json={"content": "Anyone there?", "stream": False},
            headers=headers,
        )
        assert failed.status_code == 503 and failed.json()["error"]["retryable"] is True

        report = await api.client.get("/v1/slo", params={"window": "1h"}, headers=headers)
        assert report.status_code == 200, report.text
        slo = report.json()

        # An operator sees the platform, or one tenant by name with the same figures.
        operator = await api.headers_for(f"ops-{uuid.uuid4().hex[:6]}", scopes=("operator",))
        platform = (await api.client.get("/v1/slo", headers=operator)).json()
        assert platform["scope"] == "platform" and platform["turns"] >= 6
        named = (await api.client.get("/v1/slo", params={"tenant": tenant}, headers=operator)).json()
        assert named["objectives"] == slo["objectives"]
        # Anyone else sees only their own tenant; drift and the dashboard are for operators only,
        # and a tenant's admin is not one.
        other = await api.client.get("/v1/slo", params={"tenant": "default"}, headers=headers)
        assert other.status_code == 404
        admin = await api.headers_for(tenant, scopes=("admin",))
        for path in ("/v1/drift", "/v1/dashboard/summary"):
            assert (await api.client.get(path, headers=admin)).status_code == 403, path
            assert (await api.client.get(path, headers=operator)).status_code == 200, path
        for bad in ("0s", "soon", "400d", "99999999999999999999d"):
            assert (
                await api.client.get("/v1/slo", params={"window": bad}, headers=headers)
            ).status_code == 422
        code, out = await run_cli(api, "slo", "--tenant", tenant, "--window", "1h", "--json")

    assert slo["scope"] == tenant and slo["window"] == "1h" and slo["turns"] == 6
    rows = db_rows(
        services,
        "SELECT m.ttft_ms, m.latency_ms, m.finish_reason, m.error, m.cost_usd FROM messages m"
        " JOIN tenants t ON t.id = m.tenant_id WHERE t.name = %s AND m.role = 'assistant'",
        tenant,
    )
    assert len(rows) == 6
    expected = by_hand(rows, serving.policy_file)
    reported = {o["name"]: o for o in slo["objectives"]}
    assert set(reported) == set(expected) == {"ttft_p95", "turn_p95", "availability", "cost_per_1k"}
    for name, want in expected.items():
        got = reported[name]
        assert got["value"] == pytest.approx(want["value"], rel=1e-6), name
        assert got["eligible"] == want["eligible"] and got["met"] == want["met"], name
        assert got["error_budget_remaining"] == pytest.approx(want["budget"], abs=1e-4), name
        if "good" in want:
            assert got["good"] == want["good"], name
    assert reported["availability"]["good"] == 5 and reported["availability"]["eligible"] == 6
    assert reported["availability"]["met"] is False  # 5 of 6 is under 99%

    # The CLI reports the same, and exits 1 because an objective is not met.
    assert code == 1, out
    assert json.loads(out)["objectives"] == slo["objectives"]
