"""Experiment reports against a hand count over rows this test writes (real Postgres), through the
report function, the operators' API route and the CLI."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from db.access import ensure_tenant
from db.experiments import experiment_report
from db.messages import create_conversation
from db.models import Feedback, Message
from infra.config.objectives import ExperimentPolicy
from infra.runtime.resources import Resources
from tests.support.api_harness import ApiServer, isolated_settings, real_model_entry, run_cli
from tests.support.services import Services


def reply(tenant: uuid.UUID, conv: uuid.UUID, base: str, arm: str, **fields: Any) -> Message:
    served = fields.pop("served", arm)
    return Message(
        id=uuid.uuid4(),
        tenant_id=tenant,
        conversation_id=conv,
        turn_id=f"turn-{uuid.uuid4()}",
        role="assistant",
        content="x",
        model_id=served,
        route={
            "rule": "canary" if arm != base else "highest_fidelity",
            "served_by": served,
            "arm": {"base": base, "model": arm},
        },
        **fields,
    )


def z_test_p(a: int, n_a: int, b: int, n_b: int) -> float:
    pooled = (a + b) / (n_a + n_b)
    z = (b / n_b - a / n_a) / math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    return math.erfc(abs(z) / math.sqrt(2))


async def make_rows(res: Resources, base: str, canary: str) -> dict[str, list[Message]]:
    tenant = await ensure_tenant(res.sessions, f"exp-{uuid.uuid4().hex[:8]}")
    made: dict[str, list[Message]] = {base: [], canary: []}
    async with res.sessions.begin() as session:
        conv = await create_conversation(session, tenant, None)
        await session.flush()
        for i in range(40):
            # base: 2 failed turns, 1 answered by a fallback, 1 flagged; canary: 12 failed, 4 flagged.
            made[base].append(
                reply(
                    tenant,
                    conv,
                    base,
                    base,
                    finish_reason="error" if i < 2 else "stop",
                    served="other" if i == 2 else base,
                    redacted=i == 3,
                    ttft_ms=100.0 + i,
                    latency_ms=1000.0 + 10 * i,
                    output_tokens=10,
                    cost_usd=Decimal("0.001"),
                )
            )
            made[canary].append(
                reply(
                    tenant,
                    conv,
                    base,
                    canary,
                    finish_reason="error" if i < 12 else "stop",
                    redacted=i >= 36,
                    ttft_ms=150.0 + 2 * i,
                    latency_ms=900.0 + 10 * i,
                    output_tokens=20,
                    cost_usd=Decimal("0.002"),
                )
            )
        # Another base's conversations never count, nor cancelled turns.
        made["elsewhere"] = [reply(tenant, conv, f"{base}-other", canary) for _ in range(5)]
        made["elsewhere"] += [reply(tenant, conv, base, canary, finish_reason="cancelled") for _ in range(3)]
        session.add_all([m for rows in made.values() for m in rows])
        await session.flush()
        key = uuid.uuid4()
        verdicts = [(base, i, 1, None) for i in range(8)] + [(base, 8, -1, "inaccurate"), (base, 9, -1, None)]
        verdicts += [(canary, i, 1, None) for i in range(3)]
        verdicts += [(canary, 3 + i, -1, "unhelpful" if i < 5 else "unsafe") for i in range(7)]
        for arm, i, score, reason in verdicts:
            session.add(
                Feedback(tenant_id=tenant, message_id=made[arm][i].id, key_id=key, score=score, reason=reason)
            )
        # A second key's verdict on a reply already rated: two verdicts, one rated turn.
        session.add(
            Feedback(
                tenant_id=tenant,
                message_id=made[canary][0].id,
                key_id=uuid.uuid4(),
                score=-1,
                reason="unhelpful",
            )
        )
    return made


def nearest_rank_p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


async def test_report_matches_a_hand_count(resources: Resources) -> None:
    base, canary = f"base-{uuid.uuid4().hex[:6]}", f"canary-{uuid.uuid4().hex[:6]}"
    since = datetime.now(UTC) - timedelta(seconds=5)
    made = await make_rows(resources, base, canary)
    async with resources.sessions() as session:
        report = await experiment_report(
            session, canary, base, since, datetime.now(UTC) + timedelta(seconds=5), ExperimentPolicy()
        )
    b, c = report.arms
    assert (b.arm, c.arm) == (base, canary) and b.turns == c.turns == 40  # "elsewhere" not counted
    assert b.error_rate == 3 / 40 and c.error_rate == 12 / 40
    assert b.moderation_flag_rate == 1 / 40 and c.moderation_flag_rate == 4 / 40
    # Latency from the turns the arm's own model answered.
    assert b.ttft_p95_ms == nearest_rank_p95([100.0 + i for i in range(3, 40)])
    assert c.ttft_p95_ms == nearest_rank_p95([150.0 + 2 * i for i in range(12, 40)])
    assert c.turn_p95_ms == nearest_rank_p95([900.0 + 10 * i for i in range(12, 40)])
    assert (b.output_tokens, c.output_tokens) == (400, 800)
    assert math.isclose(b.cost_per_1k_messages_usd or 0, 1.0) and math.isclose(
        c.cost_per_1k_messages_usd or 0, 2.0
    )
    assert (b.feedback, c.feedback) == (10, 11) and (b.feedback_rate, c.feedback_rate) == (10 / 40, 10 / 40)
    assert b.mean_score == 6 / 10 and c.mean_score == -5 / 11
    assert b.thumbs_down_reasons == {"inaccurate": 1, "none": 1}
    assert c.thumbs_down_reasons == {"unhelpful": 6, "unsafe": 2}
    assert b.score_interval is not None and b.score_interval[0] < 0.6 < b.score_interval[1]

    diffs = {d.metric: d for d in report.differences}
    errors = diffs["error_rate"]
    assert math.isclose(errors.p_value or 1, z_test_p(3, 40, 12, 40)) and errors.significant
    assert math.isclose(errors.delta or 0, 9 / 40)
    flags = diffs["moderation_flag_rate"]
    assert math.isclose(flags.p_value or 1, z_test_p(1, 40, 4, 40)) and not flags.significant
    # 10 and 11 verdicts: below min_samples (30), so no decision, however far apart.
    score = diffs["mean_score"]
    assert not score.significant and "no decision" in score.note
    assert math.isclose(diffs["ttft_p95_ms"].delta or 0, c.ttft_p95_ms / b.ttft_p95_ms)
    assert len(made[base]) == 40


async def test_too_few_samples_are_never_significant(resources: Resources) -> None:
    base, canary = f"base-{uuid.uuid4().hex[:6]}", f"canary-{uuid.uuid4().hex[:6]}"
    since = datetime.now(UTC) - timedelta(seconds=5)
    await make_rows(resources, base, canary)
    async with resources.sessions() as session:
        report = await experiment_report(
            session,
            canary,
            base,
            since,
            datetime.now(UTC) + timedelta(seconds=5),
            ExperimentPolicy(min_samples=41),
        )
    errors = next(d for d in report.differences if d.metric == "error_rate")
    assert errors.p_value is not None and errors.p_value < 0.05 and not errors.significant
    assert "fewer than 41" in errors.note


async def test_the_operators_route_and_the_cli_give_the_same_report(
    services: Services, tmp_path: Path
) -> None:
    base, canary = f"base-{uuid.uuid4().hex[:6]}", f"canary-{uuid.uuid4().hex[:6]}"
    models = {
        base: real_model_entry(),
        canary: real_model_entry(version="2", canary_of=base, share=0.1),
    }
    settings = isolated_settings(services, tmp_path, models=models)
    async with ApiServer(settings) as api:
        await make_rows(api.app.state.resources, base, canary)
        operator = await api.headers_for("default", ("operator",))
        listed = await api.client.get("/v1/experiments", headers=operator)
        assert listed.json()["experiments"] == [
            {"name": canary, "kind": "model", "base": base},
            {"name": "chat-v2", "kind": "prompt", "base": "chat-v1"},  # temporal.yaml's prompt canary
        ]
        resp = await api.client.get(
            f"/v1/experiments/{canary}", params={"since": "2026-01-01T00:00:00Z"}, headers=operator
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert [a["turns"] for a in body["arms"]] == [40, 40]
        assert [a["error_rate"] for a in body["arms"]] == [3 / 40, 12 / 40]
        assert {d["metric"]: d["significant"] for d in body["differences"]}["error_rate"] is True
        assert (await api.client.get(f"/v1/experiments/{canary}")).status_code == 403  # a chat key
        assert (await api.client.get(f"/v1/experiments/{base}", headers=operator)).status_code == 404
        code, out = await run_cli(api, "experiments", "report", canary, "--json", "--since", "2026-01-01")
    assert code == 0, out
    (cli,) = json.loads(out[out.index("[") :])
    assert [a["error_rate"] for a in cli["arms"]] == [3 / 40, 12 / 40]
    assert [a["mean_score"] for a in cli["arms"]] == [a["mean_score"] for a in body["arms"]]
