"""Compliance replay: a past turn, fetched from Temporal and decoded, replays on the current code and is
reconstructed; a history the code no longer reproduces is reported as such, not as a traceback."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from tests.support.api_harness import ApiServer, run_cli
from tests.support.services import Services, opened


async def a_turn(api: ApiServer) -> dict[str, Any]:
    conv = await api.conversation()
    resp = await api.client.post(
        f"/v1/conversations/{conv}/messages",
        json={"content": "I am jane.doe@example.com. Name a colour.", "stream": False, "max_tokens": 6},
    )
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def test_audit_endpoint_replays_and_reconstructs_a_turn(api: ApiServer, services: Services) -> None:
    turn = await a_turn(api)
    admin = await api.headers_for("default", scopes=("admin",))
    resp = await api.client.get(f"/v1/turns/{turn['turn_id']}/audit", headers=admin)
    assert resp.status_code == 200, resp.text
    report = resp.json()
    assert report["replay"] == {"reproduced": True, "failure": None}
    assert report["input"]["user_text"] == "I am [EMAIL]. Name a colour." and report["input"]["pii_counts"]
    assert report["route"]["rule"] == "highest_fidelity" and report["prompt"]["template_version"] == "chat-v1"
    [attempt] = report["inference"]
    assert attempt["model"] == turn["model"] and attempt["version"] == turn["model_version"]
    assert attempt["prompt_sent"][-1] == {"role": "user", "content": "I am [EMAIL]. Name a colour."}
    assert attempt["result"]["text"] == turn["text"] and attempt["outcome"] == "completed"
    [stored] = opened(
        services,
        "SELECT tenant_id, content FROM messages WHERE turn_id = %s AND role = 'assistant'",
        turn["turn_id"],
    )
    assert stored == turn["text"] and report["moderation"] in ({"redacted": False, "reason": None}, None)
    assert report["timings_ms"]["total"] > 0
    assert "jane.doe" not in resp.text  # the history never held it

    chat_only = await api.client.get(f"/v1/turns/{turn['turn_id']}/audit")
    assert chat_only.status_code == 403
    stranger = await api.headers_for("someone-else", scopes=("admin",))
    assert (await api.client.get(f"/v1/turns/{turn['turn_id']}/audit", headers=stranger)).status_code == 404


async def test_replay_command_exports_and_reports_a_changed_workflow(
    api: ApiServer, services: Services, tmp_path: Path
) -> None:
    turn = await a_turn(api)
    code, out = await run_cli(api, "replay", turn["turn_id"], "--export", str(tmp_path))
    assert code == 0, out
    assert (
        "reproduced by the current workflow code" in out and "I am [EMAIL]" in out and turn["text"][:5] in out
    )
    history = tmp_path / f"{turn['turn_id']}.history.json"
    reconstruction = json.loads((tmp_path / f"{turn['turn_id']}.reconstruction.json").read_text())
    assert reconstruction["replay"]["reproduced"] is True
    assert "jane.doe" not in history.read_text() and "Name a colour" not in history.read_text()  # encrypted

    # An exported history replays later, offline from Temporal; one the code no longer matches fails clearly.
    code, out = await run_cli(api, "replay", "--history", str(history))
    assert code == 0, out
    events = json.loads(history.read_text())
    renamed = 0
    for event in events["events"]:
        # Inference is a local activity: its record is a marker naming the activity type.
        marker = event.get("markerRecordedEventAttributes")
        if not marker or "data" not in marker.get("details", {}):
            continue
        payload = marker["details"]["data"]["payloads"][0]
        data = json.loads(base64.b64decode(payload["data"]))
        if data.get("activity_type") == "infer":
            data["activity_type"] = "infer_somewhere_else"
            payload["data"] = base64.b64encode(json.dumps(data).encode()).decode()
            renamed += 1
    assert renamed == 1
    tampered = tmp_path / "tampered.history.json"
    tampered.write_text(json.dumps(events))
    code, out = await run_cli(api, "replay", "--history", str(tampered))
    assert code == 1, out
    assert "NOT reproduced (non-deterministic)" in out and "Traceback" not in out
