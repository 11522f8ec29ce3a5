"""One chat turn is one trace: the API request → the workflow → every step → the model call and
database calls, linked parent to child, with GenAI attributes, readable with `turnflow trace`."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from tests.support.api_harness import ApiServer, run_cli
from tests.support.sse import collect

STEPS = ("prepare_turn", "infer", "persist_turn")
# The prepare step's parts: a span each, under its own.
PARTS = ("validate_turn", "retrieve", "route_turn", "assemble_prompt")


def walk(node: dict[str, Any], parent: dict[str, Any] | None = None) -> list[tuple[dict[str, Any], Any]]:
    """Every span of the tree with its parent."""
    found = [(node, parent)]
    for child in node["children"]:
        found += walk(child, node)
    return found


async def traced(api: ApiServer, turn_id: str) -> dict[str, Any]:
    """The turn's trace once it is complete (spans are exported in batches, the workflow's when it ends)."""
    deadline = time.monotonic() + 30
    while True:
        code, out = await run_cli(api, "trace", turn_id, "--json")
        if code == 0:
            found = json.loads(out)
            names = {s["name"] for root in found["spans"] for s, _ in walk(root)}
            if {"RunActivity:persist_turn", "RunActivity:moderate_message"} <= names:
                return dict(found)
        assert time.monotonic() < deadline, out
        await asyncio.sleep(1)


async def test_a_turn_is_one_trace_with_every_step_and_genai_attributes(api: ApiServer) -> None:
    conv = await api.conversation()
    rid = f"trace-{uuid.uuid4()}"
    async with api.client.stream(
        "POST",
        f"/v1/conversations/{conv}/messages",
        json={"content": "Name three colours.", "max_tokens": 12},
        headers={"X-Request-ID": rid},
    ) as resp:
        assert resp.status_code == 200 and resp.headers["X-Request-ID"] == rid
        events = await collect(resp)
    turn = next(e.data for e in events if e.event == "turn")
    done = next(e.data for e in events if e.event == "done")
    assert turn["request_id"] == rid

    found = await traced(api, turn["turn_id"])
    # One trace. This test's own httpx client is instrumented too and sent a `traceparent`: the API's
    # span joins the caller's trace, as any instrumented caller's would.
    [caller] = found["spans"]
    assert caller["kind"] == "client" and caller["attributes"]["http.request.method"] == "POST"
    [root] = caller["children"]
    assert root["name"] == "POST /v1/conversations/{conversation_id}/messages" and root["kind"] == "server"
    assert root["attributes"]["turnflow.request.id"] == rid
    assert root["attributes"]["turnflow.turn.id"] == turn["turn_id"]
    spans = walk(root)
    by_name: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    for span, parent in spans:
        by_name.setdefault(span["name"], []).append((span, parent))

    # API → StartWorkflow → RunWorkflow → RunActivity:step, for every step (all local activities: a
    # schedule span each would say nothing the run span does not; infra/telemetry/temporal_spans.py).
    [(start, start_parent)] = by_name["StartWorkflow:chat_turn"]
    assert start_parent is root
    [(run, run_parent)] = by_name["RunWorkflow:chat_turn"]
    assert run_parent is start and run["duration_ms"] > 0
    for step in (*STEPS, "moderate_message"):  # moderation: the last step (after `done`), same trace
        [(ran, ran_parent)] = by_name[f"RunActivity:{step}"]
        assert ran_parent is run and ran["duration_ms"] > 0, step
    assert not [name for name in by_name if name.startswith("StartActivity:")]
    [(prepared, _)] = by_name["RunActivity:prepare_turn"]
    for part in PARTS:
        [(_, part_parent)] = by_name[part]
        assert part_parent is prepared, part
    # A part's statements are its own spans: the recent history the prompt read (none in Redis yet).
    [(assembly, _)] = by_name["assemble_prompt"]
    read = [s["attributes"].get("db.statement", "") for s, p in spans if p is assembly]
    assert any(statement.startswith("SELECT") for statement in read), read

    # The model call: a GenAI client span under the infer activity, with the conventions' attributes.
    [(chat, chat_parent)] = by_name[f"chat {turn['model']}"]
    assert chat_parent["name"] == "RunActivity:infer" and chat["kind"] == "client"
    attrs = chat["attributes"]
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "llama.cpp"
    assert attrs["gen_ai.request.model"] == attrs["gen_ai.response.model"] == turn["model"]
    assert attrs["gen_ai.usage.output_tokens"] == done["usage"]["output_tokens"]
    assert attrs["gen_ai.usage.input_tokens"] == done["usage"]["input_tokens"]
    assert attrs["gen_ai.response.finish_reasons"] == [done["finish_reason"]]
    assert attrs["gen_ai.conversation.id"] == conv and attrs["gen_ai.request.max_tokens"] == 12
    assert [e["name"] for e in chat["events"]] == ["gen_ai.first_token"]
    assert "Name three colours" not in json.dumps(found)  # no message content on spans

    # Database calls are spans of the step that made them; Redis commands are not spans at all (each
    # well under a millisecond, fourteen a turn: their time is in their step's span).
    persist = by_name["RunActivity:persist_turn"][0][0]
    statements = [s["attributes"].get("db.statement", "") for s, p in spans if p is persist]
    assert any(s.startswith("INSERT INTO messages") for s in statements), statements
    assert not [s["name"] for s, _ in spans if s["attributes"].get("db.system") == "redis"]
    assert all(s["status"] != "error" for s, _ in spans if s["name"].startswith(("Run", "chat")))

    code, out = await run_cli(api, "trace", turn["turn_id"])
    assert code == 0 and "RunActivity:infer" in out and f"chat {turn['model']}" in out and " ms" in out


async def test_trace_of_an_unknown_turn_is_one_clear_line(api: ApiServer) -> None:
    code, out = await run_cli(api, "trace", "turn-nope")
    assert code == 1 and "no trace for turn turn-nope" in out and "Traceback" not in out
