"""The chat-completions surface beyond the basics: content as text parts, the sampling parameters
(each reaching the model server in its own spelling), `stop` and `response_format` on the real
llama.cpp server, `user` as the end user, one model name in every chunk, and a 400 naming every
parameter turnflow cannot honour."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import pytest_asyncio
from openai import AsyncOpenAI, BadRequestError

from infra.config.endpoints import default_gguf
from tests.support.api_harness import ApiServer, api_key_of, isolated_settings, model_entry, real_model_entry
from tests.support.fake_model import ScriptedModelServer
from tests.support.services import Services, db_rows

pytestmark = pytest.mark.timeout(300)

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


def client_of(api: ApiServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{api.url}/v1", api_key=api_key_of(api), max_retries=0)


@pytest_asyncio.fixture
async def recorded(
    services: Services, tmp_path: Path
) -> AsyncIterator[tuple[ApiServer, ScriptedModelServer]]:
    """A recording stand-in served as two models: an OpenAI-style server (vLLM) and llama.cpp, which
    spell constrained output differently; plus a TGI on its native route (no presence penalty)."""
    async with ScriptedModelServer("recorder") as scripted:
        models = {
            "as-vllm": model_entry(scripted.url, provider="vllm", fidelity=2),
            "as-llamacpp": model_entry(scripted.url, provider="llamacpp", fidelity=1),
            "as-tgi-native": model_entry(scripted.url, provider="tgi", stream_api="generate"),
            # A gateway with no tokenize route at all (OpenAI itself, Ollama, LM Studio...).
            "as-gateway": model_entry(scripted.url, provider="openai", tokenizer="server"),
        }
        settings = isolated_settings(services, tmp_path, models=models, model_path=default_gguf())
        async with ApiServer(settings) as api:
            yield api, scripted


async def test_each_parameter_reaches_the_model_server_in_its_spelling(
    recorded: tuple[ApiServer, ScriptedModelServer], services: Services
) -> None:
    api, scripted = recorded
    scripted.script.reply = ['{"name": "Ada",', ' "age": 36}']
    asked = {
        "stop": ["\n\n", "END"],
        "top_p": 0.8,
        "seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.25,
        "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
    }
    client = client_of(api)
    for model in ("as-vllm", "as-llamacpp"):
        reply = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Who is Ada?"}],
            user=f"end-user-{model}",
            **asked,  # type: ignore[arg-type]
        )
        assert json.loads(reply.choices[0].message.content or "") == {"name": "Ada", "age": 36}
    vllm, llamacpp = scripted.bodies[-2:]
    for body in (vllm, llamacpp):
        assert {k: body[k] for k in ("top_p", "seed", "presence_penalty", "frequency_penalty")} == {
            "top_p": 0.8,
            "seed": 7,
            "presence_penalty": 0.5,
            "frequency_penalty": -0.25,
        }
        assert body["stop"] == ["\n\n", "END"]
    # vLLM's structured outputs; llama.cpp's json_object with a schema.
    assert vllm["structured_outputs"] == {"json": PERSON} and "response_format" not in vllm
    assert llamacpp["response_format"] == {"type": "json_object", "schema": PERSON}
    # `user` is the conversation's end user; the parameters are in the turn's recorded input.
    rows = db_rows(services, "SELECT end_user FROM conversations WHERE end_user LIKE %s", "end-user-as-%")
    assert {r[0] for r in rows} >= {"end-user-as-vllm", "end-user-as-llamacpp"}

    # TGI's native route has no presence penalty, and an OpenAI-style API cannot be asked for a schema
    # through turnflow's client: refused before any turn, naming the parameter and the model.
    before = scripted.requests
    for model, extra, param in (
        ("as-tgi-native", {"presence_penalty": 0.5}, "presence_penalty"),
        ("as-gateway", {"response_format": asked["response_format"]}, "response_format"),
    ):
        with pytest.raises(BadRequestError) as refused:
            await client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "Hi"}],
                **extra,  # type: ignore[arg-type]
            )
        error = refused.value.body
        assert isinstance(error, dict)
        assert (error["code"], error["param"]) == ("unsupported_parameter", param)
        assert model in error["message"]
    assert scripted.requests == before
    # JSON mode (no schema) it can do.
    scripted.script.reply = ['{"ok": true}']
    await client.chat.completions.create(
        model="as-gateway",
        messages=[{"role": "user", "content": "Hi"}],
        response_format={"type": "json_object"},
    )
    assert scripted.bodies[-1]["response_format"] == {"type": "json_object"}
    assert scripted.bodies[-1]["store"] is False


async def test_a_server_without_a_tokenize_route_serves_with_estimated_counts(
    recorded: tuple[ApiServer, ScriptedModelServer], services: Services
) -> None:
    api, _ = recorded
    routes = {}
    for model in ("as-gateway", "as-vllm"):
        body = {"model": model, "messages": [{"role": "user", "content": "Hi there"}], "max_tokens": 8}
        resp = await api.client.post("/v1/chat/completions", json=body)
        assert resp.status_code == 200, resp.text
        assert resp.json()["model"] == model
        sql = "SELECT route FROM messages WHERE turn_id = %s AND role = 'assistant'"
        ((routes[model],),) = db_rows(services, sql, resp.headers["X-Turn-ID"])
    # Recorded on the reply where it was so, and only there.
    assert routes["as-gateway"]["prompt_tokens_estimated"] is True
    assert "prompt_tokens_estimated" not in routes["as-vllm"]


async def test_a_reply_that_breaks_its_response_format_is_an_error(
    recorded: tuple[ApiServer, ScriptedModelServer],
) -> None:
    api, scripted = recorded
    scripted.script.reply = ['{"name": "Ada"', ', "age": "old"}']
    body = {
        "model": "as-vllm",
        "messages": [{"role": "user", "content": "Who is Ada?"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
    }
    resp = await api.client.post("/v1/chat/completions", json=body)
    assert resp.status_code == 502, resp.text
    error = resp.json()["error"]
    assert error["code"] == "invalid_model_output" and "does not match the schema" in error["message"]
    async with api.client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as streamed:
        lines = [line async for line in streamed.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    last = json.loads(lines[-2].removeprefix("data: "))
    assert last["error"]["code"] == "invalid_model_output"
    scripted.script.reply = ["not", " json"]
    resp = await api.client.post(
        "/v1/chat/completions", json={**body, "response_format": {"type": "json_object"}}
    )
    assert resp.status_code == 502 and "is not JSON" in resp.json()["error"]["message"]


async def test_stop_really_stops_the_real_model(api: ApiServer) -> None:
    client = client_of(api)
    ask: dict[str, Any] = {
        "messages": [{"role": "user", "content": "Name three colours of the rainbow."}],
        "temperature": 0,
        "seed": 1,
        "max_tokens": 24,
    }
    whole = (await client.chat.completions.create(model="any", **ask)).choices[0].message.content or ""
    words = whole.split()
    assert len(words) >= 4, whole
    cut = words[len(words) // 2]
    stopped = await client.chat.completions.create(model="any", stop=[cut], **ask)
    text = stopped.choices[0].message.content or ""
    assert cut not in text and whole.startswith(text.rstrip()), (whole, cut, text)
    assert stopped.choices[0].finish_reason == "stop"


async def test_json_schema_gives_valid_json_from_the_real_model(api: ApiServer) -> None:
    client = client_of(api)
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    reply = await client.chat.completions.create(
        model="any",
        messages=[{"role": "user", "content": "Describe a person as JSON with a name and an age."}],
        response_format=fmt,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=64,
    )
    content = reply.choices[0].message.content or ""
    jsonschema.validate(json.loads(content), PERSON)
    # Streamed too, every chunk naming the one model that answered.
    stream = await client.chat.completions.create(
        model="any",
        messages=[{"role": "user", "content": "Describe a person as JSON with a name and an age."}],
        response_format=fmt,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=64,
        stream=True,
    )
    parts, names = [], set()
    async for chunk in stream:
        names.add(chunk.model)
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
    jsonschema.validate(json.loads("".join(parts)), PERSON)
    assert names == {"smollm2-135m-instruct-q4_1"}


async def test_text_parts_and_developer_messages_are_read(api: ApiServer, services: Services) -> None:
    marker = uuid.uuid4().hex[:8]
    resp = await api.client.post(
        "/v1/chat/completions",
        json={
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": f"Say {marker}"}, {"type": "text", "text": "now."}],
                },
            ],
            "max_tokens": 4,
        },
    )
    assert resp.status_code == 200, resp.text
    turn_id = resp.headers["X-Turn-ID"]
    (row,) = db_rows(services, "SELECT count(*) FROM messages WHERE turn_id = %s AND role = 'user'", turn_id)
    assert row[0] == 1


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"logprobs": True}, "logprobs"),
        ({"logit_bias": {"1": 2}}, "logit_bias"),
        ({"n": 2}, "n"),
        ({"frobnicate": 1}, "frobnicate"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}],
                    }
                ]
            },
            "messages[0].content",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hi", "function_call": {"name": "f", "arguments": "{}"}},
                    {"role": "user", "content": "And?"},
                ]
            },
            "messages[1].function_call",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 7}}}},
            "response_format.json_schema.schema",
        ),
    ],
)
async def test_what_turnflow_cannot_honour_is_a_400_naming_it(
    api: ApiServer, extra: dict[str, Any], param: str
) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, **extra}
    resp = await api.client.post("/v1/chat/completions", json=body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == param and error["code"] in ("unsupported_parameter", "invalid_schema"), error
    assert error["message"]


async def test_null_fields_and_n_1_are_accepted(api: ApiServer) -> None:
    # What a client sends back of an earlier reply: empty tool calls and refusals mean nothing asked.
    earlier = {"role": "assistant", "content": "Hello!", "refusal": None, "tool_calls": []}
    messages = [{"role": "user", "content": "Hi"}, earlier, {"role": "user", "content": "Again"}]
    body = {"messages": messages, "max_tokens": 4, "n": 1, "tools": None}
    resp = await api.client.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text


async def test_real_model_server_takes_every_sampling_parameter(services: Services, tmp_path: Path) -> None:
    # The real llama.cpp server, through its adapter, with all of them at once.
    settings = isolated_settings(services, tmp_path, models={"real": real_model_entry()})
    async with ApiServer(settings) as api:
        reply = await client_of(api).chat.completions.create(
            model="real",
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=8,
            top_p=0.9,
            seed=3,
            presence_penalty=0.3,
            frequency_penalty=0.3,
            stop=["\n\n"],
        )
    assert reply.choices[0].message.content is not None and reply.model == "real"
