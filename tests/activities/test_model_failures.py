"""How a turn handles its model server: failures fall back or end in an error frame (never a hang);
output rules stop generation; moderation redacts after the fact. The misbehaving server is
ScriptedModelServer; the fallback, where one is used, is the real llama.cpp server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from infra.config.endpoints import default_gguf
from tests.support.api_harness import ApiServer, api_key_of, isolated_settings, model_entry
from tests.support.fake_model import ScriptedModelServer
from tests.support.services import Services, db_rows, free_port, messages_of
from tests.support.sse import Event, collect

pytestmark = pytest.mark.timeout(180)


@pytest_asyncio.fixture
async def scripted() -> AsyncIterator[ScriptedModelServer]:
    async with ScriptedModelServer("scripted-gpu") as server:
        yield server


async def turn(api: ApiServer, content: str = "Hello?") -> tuple[str, list[Event]]:
    conv = await api.conversation()
    async with api.client.stream(
        "POST", f"/v1/conversations/{conv}/messages", json={"content": content, "max_tokens": 24}
    ) as resp:
        assert resp.status_code == 200
        return resp.headers["x-turn-id"], await collect(resp)


def app_settings(services: Services, tmp_path: Path, primary: str, fallback: str, **extra: object):
    """`scripted-gpu` (the best model) at ``primary``, falling back to `smollm2-cpu` at ``fallback``."""
    models = {
        "scripted-gpu": model_entry(primary, fidelity=10, fallback=["smollm2-cpu"]),
        "smollm2-cpu": model_entry(fallback, tier="cpu-quantized", fidelity=1),
    }
    return isolated_settings(
        services,
        tmp_path,
        models=models,
        model_path=default_gguf(),  # the scripted server has no tokenizer endpoint
        **extra,
    )


async def test_failing_model_falls_back_to_the_cpu_model(
    services: Services, tmp_path: Path, scripted: ScriptedModelServer
) -> None:
    scripted.script.status = 500
    settings = app_settings(services, tmp_path, scripted.url, services.endpoints.model_url)
    async with ApiServer(settings) as api:
        turn_id, seen = await turn(api)
    kinds = [e.event for e in seen]
    # Each new attempt starts with `reset` (the retry of the primary, then the fallback), then streams.
    assert kinds[:3] == ["turn", "reset", "reset"] and kinds[-2:] == ["done", "moderated"]
    assert [e.data["model"] for e in seen[:3]] == ["scripted-gpu", "scripted-gpu", "smollm2-cpu"]
    assert [e.data["attempt"] for e in seen[:3]] == [1, 2, 1]
    assert scripted.requests == 2  # infer: maximum_attempts 2 in temporal.yaml
    done = seen[-2].data
    assert done["model"] == "smollm2-cpu"
    tokens = "".join(e.data["text"] for e in seen if e.event == "token")
    assert messages_of(services, turn_id)[1] == ("assistant", tokens, done["finish_reason"])


async def test_stopped_model_server_falls_back_without_hanging(services: Services, tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"  # connection refused: the server is down
    settings = app_settings(services, tmp_path, nobody, services.endpoints.model_url)
    async with ApiServer(settings) as api:
        _, seen = await asyncio.wait_for(turn(api), timeout=60)
    assert [e.event for e in seen[:3]] == ["turn", "reset", "reset"]
    assert seen[-2].event == "done" and seen[-2].data["model"] == "smollm2-cpu"


async def test_no_model_left_gives_a_retryable_error_frame(
    services: Services, tmp_path: Path, scripted: ScriptedModelServer
) -> None:
    scripted.script.status = 503
    nobody = f"http://127.0.0.1:{free_port()}"
    settings = app_settings(services, tmp_path, scripted.url, nobody)
    async with ApiServer(settings) as api:
        turn_id, seen = await asyncio.wait_for(turn(api), timeout=60)
        conv = await api.conversation()
        resp = await api.client.post(
            f"/v1/conversations/{conv}/messages", json={"content": "Hi", "stream": False}
        )
    error = seen[-1]
    assert error.event == "error"
    assert error.data["code"] == "model_unavailable" and error.data["retryable"] is True
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "model_unavailable" and resp.json()["error"]["retryable"] is True
    # The accepted message is recorded, with an explicit error as its reply.
    assert messages_of(services, turn_id) == [("user", "Hello?", None), ("assistant", "", "error")]


async def test_output_rule_stops_generation_early(
    services: Services, tmp_path: Path, scripted: ScriptedModelServer
) -> None:
    scripted.script.reply = ["Sure.", " Here is", " how to", " build a", " bomb", ": step", " one", "..."]
    settings = app_settings(services, tmp_path, scripted.url, services.endpoints.model_url)
    async with ApiServer(settings) as api:
        turn_id, seen = await turn(api)
    done = next(e for e in seen if e.event == "done")
    assert done.data["finish_reason"] == "content_filter"
    stored = messages_of(services, turn_id)[1][1]
    assert stored == "Sure. Here is how to build a" and "bomb" not in stored
    assert "step" not in "".join(e.data["text"] for e in seen if e.event == "token")


async def test_moderation_redacts_after_the_fact(
    services: Services, tmp_path: Path, scripted: ScriptedModelServer
) -> None:
    scripted.script.reply = ["You", " should", " hurt", " yourself", "."]
    settings = app_settings(services, tmp_path, scripted.url, services.endpoints.model_url)
    async with ApiServer(settings) as api:
        turn_id, seen = await turn(api)
        conv = seen[0].data["conversation_id"]
        listed = (await api.client.get(f"/v1/conversations/{conv}/messages")).json()
    # The reply streamed and was persisted; then moderation redacted it, and the stream said so.
    assert [e.event for e in seen[-2:]] == ["done", "redact"]
    redact = seen[-1].data
    assert redact["message_id"] == seen[-2].data["message_id"] and "safety-v1" in redact["reason"]
    assert listed[1]["redacted"] is True and listed[1]["content"] == ""
    # The stored row keeps the text for audit, flagged as redacted.
    assert messages_of(services, turn_id)[1][1] == "You should hurt yourself."


async def test_whole_turn_timeout_ends_the_stream_with_an_error(
    services: Services, tmp_path: Path, scripted: ScriptedModelServer
) -> None:
    """A model slower than the turn's timeout: the turn ends itself just before the timeout, records
    an explicit retryable error for the message, and the stream says so."""
    import yaml

    scripted.script.reply = ["slow"] * 40
    scripted.script.token_delay_s = 0.25  # 10 s of reply
    settings = app_settings(services, tmp_path, scripted.url, services.endpoints.model_url)
    policy = yaml.safe_load(settings.policy_file.read_text())
    policy["workflows"]["chat_turn"]["execution_timeout"] = "6s"  # the turn's own deadline: 4 s
    settings.policy_file.write_text(yaml.safe_dump(policy))
    async with ApiServer(settings) as api:
        _, seen = await asyncio.wait_for(turn(api), timeout=60)
    assert seen[0].event == "turn" and "token" in [e.event for e in seen]
    assert seen[-1].event == "error"
    error = seen[-1].data
    assert (error["code"], error["retryable"]) == ("turn_timed_out", True)
    assert error["message"] == "the turn ran out of time (its whole-turn timeout is 6 s); try again"
    turn_id = seen[0].data["turn_id"]
    recorded = db_rows(
        services, "SELECT role, content, error FROM messages WHERE turn_id = %s ORDER BY role DESC", turn_id
    )
    assert [role for role, *_ in recorded] == ["user", "assistant"], recorded
    assert recorded[1][1] == "" and recorded[1][2]["code"] == "turn_timed_out", recorded


async def test_openai_stream_survives_a_fallback_before_any_token(
    services: Services, tmp_path: Path, scripted: ScriptedModelServer
) -> None:
    """A `reset` before any text was sent costs an OpenAI client nothing: the stream goes on."""
    from openai import AsyncOpenAI

    scripted.script.status = 500
    settings = app_settings(services, tmp_path, scripted.url, services.endpoints.model_url)
    async with ApiServer(settings) as api:
        client = AsyncOpenAI(base_url=f"{api.url}/v1", api_key=api_key_of(api), max_retries=0)
        stream = await client.chat.completions.create(
            model="any", messages=[{"role": "user", "content": "Say hi"}], max_tokens=12, stream=True
        )
        parts, finish = [], None
        async for chunk in stream:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert scripted.requests == 2
    assert "".join(parts) and finish in ("stop", "length")
