"""Drift signals flag what moved past its threshold (retrieval scores, query centroids, latency per
model version) and leave steady subjects alone; recorded rows are the input, as in production."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg

from db.access import ensure_tenant
from tests.support.api_harness import ApiServer, run_cli
from tests.support.services import Services, psycopg_url

RNG = np.random.default_rng(20261124)


def unit(vector: np.ndarray) -> list[float]:
    return [float(x) for x in vector / np.linalg.norm(vector)]


def around(direction: np.ndarray) -> str:
    """A query embedding near ``direction``, as pgvector text."""
    return json.dumps(unit(direction + RNG.normal(0, 0.05, 384)))


async def test_drift_flags_what_moved_and_leaves_steady_subjects_alone(
    api: ApiServer, services: Services
) -> None:
    sessions = api.app.state.resources.sessions
    tag = uuid.uuid4().hex[:6]
    drifting, steady = f"drifting-{tag}", f"steady-{tag}"
    ids = {name: await ensure_tenant(sessions, name) for name in (drifting, steady)}
    now = datetime.now(UTC)
    recent, baseline = now - timedelta(minutes=20), now - timedelta(hours=6)  # default windows: 1h, 24h
    topic_a, topic_b = np.eye(384)[0], np.eye(384)[1]
    observations = []
    for name, tenant in ids.items():
        for _ in range(40):
            observations.append((tenant, baseline, RNG.normal(0.8, 0.05), around(topic_a)))
        moved = name == drifting
        for _ in range(30):
            score = RNG.normal(0.35 if moved else 0.8, 0.05)
            observations.append((tenant, recent, score, around(topic_b if moved else topic_a)))
    slow, same = f"drift-probe-{tag}", f"steady-probe-{tag}"
    with psycopg.connect(psycopg_url(services.endpoints.database_url)) as conn:
        conn.cursor().executemany(
            "INSERT INTO retrieval_observations (tenant_id, at, results, top_score, mean_score,"
            " embedding_version, query_embedding) VALUES (%s, %s, 4, %s, %s, 'v', %s::vector)",
            [(t, at, s, s, e) for t, at, s, e in observations],
        )
        conversation = uuid.uuid4()
        conn.execute("INSERT INTO conversations (id, tenant_id) VALUES (%s, %s)", (conversation, ids[steady]))
        replies = []
        for model, (before_ms, after_ms) in ((slow, (500, 1500)), (same, (500, 520))):
            for at, latency in ((baseline, before_ms), (recent, after_ms)):
                for _ in range(25):
                    replies.append((ids[steady], conversation, f"turn-{uuid.uuid4()}", model, latency, at))
        conn.cursor().executemany(
            "INSERT INTO messages (id, tenant_id, conversation_id, turn_id, role, content, model_id,"
            " model_version, latency_ms, finish_reason, created_at)"
            " VALUES (gen_random_uuid(), %s, %s, %s, 'assistant', '', %s, 'v1', %s, 'stop', %s)",
            replies,
        )

    operator = await api.headers_for(f"ops-{tag}", scopes=("operator",))
    resp = await api.client.get("/v1/drift", headers=operator)
    assert resp.status_code == 200, resp.text
    signals = {(s["signal"], s["subject"]): s for s in resp.json()["signals"]}

    scores = signals[("retrieval_scores", drifting)]
    assert scores["flagged"] and scores["score"] > 1 and scores["recent_samples"] == 30
    assert scores["baseline_samples"] == 40 and scores["recent"] < scores["baseline"]
    assert not signals[("retrieval_scores", steady)]["flagged"]
    centroid = signals[("query_centroid", drifting)]
    assert centroid["flagged"] and centroid["score"] > 0.5  # orthogonal topics: distance near 1
    assert not signals[("query_centroid", steady)]["flagged"]
    assert signals[("query_centroid", steady)]["score"] < 0.05
    latency = signals[("latency", f"{slow}@v1")]
    assert latency["flagged"] and latency["score"] == 3.0
    assert latency["recent"] == 1500 and latency["baseline"] == 500
    assert not signals[("latency", f"{same}@v1")]["flagged"]
    assert resp.json()["flagged"] >= 3

    code, out = await run_cli(api, "drift", "--json")
    assert code == 1  # something drifted
    cli = {(s["signal"], s["subject"]): s["flagged"] for s in json.loads(out)["signals"]}
    assert cli[("retrieval_scores", drifting)] and not cli[("retrieval_scores", steady)]
