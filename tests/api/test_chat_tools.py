"""Tools in chat completions: `tools` and `tool_choice` reach the model server, tool calls stream
back in OpenAI's delta form, the client's results come back as `tool` messages into the prompt (PII
redacted) and the transcript; a round trip through the `openai` client on the real llama.cpp server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from openai import AsyncOpenAI

from api.core.tenancy import DEFAULT_TENANT
from infra.config.endpoints import default_gguf
from tests.support.api_harness import ApiServer, api_key_of, isolated_settings, model_entry
from tests.support.fake_model import ScriptedModelServer
from tests.support.services import Services

pytestmark = pytest.mark.timeout(300)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


def client_of(api: ApiServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{api.url}/v1", api_key=api_key_of(api), max_retries=0)


async def transcript(api: ApiServer, conversation_id: str) -> list[dict[str, Any]]:
    resp = await api.client.get(f"/v1/conversations/{conversation_id}/messages")
    assert resp.status_code == 200, resp.text
    messages: list[dict[str, Any]] = resp.json()
    return messages


async def conversation_of(api: ApiServer, turn_id: str) -> str:
    resp = await api.client.get(f"/v1/turns/{turn_id}")
    assert resp.status_code == 200, resp.text
    return str(resp.json()["result"]["conversation_id"])


@pytest_asyncio.fixture
async def recorded(
    services: Services, tmp_path: Path
) -> AsyncIterator[tuple[ApiServer, ScriptedModelServer]]:
    """A recording stand-in that calls tools, served as vLLM, llama.cpp and TGI's native route."""
    async with ScriptedModelServer("recorder") as scripted:
        models = {
            "as-vllm": model_entry(scripted.url, provider="vllm", fidelity=2),
            "as-llamacpp": model_entry(scripted.url, provider="llamacpp", fidelity=1),
            "as-tgi-native": model_entry(scripted.url, provider="tgi", stream_api="generate"),
        }
        settings = isolated_settings(services, tmp_path, models=models, model_path=default_gguf())
        async with ApiServer(settings) as api:
            yield api, scripted


async def test_tool_calls_stream_in_delta_form_and_results_come_back_into_prompt_and_transcript(
    recorded: tuple[ApiServer, ScriptedModelServer],
) -> None:
    api, scripted = recorded
    client = client_of(api)
    # Two calls at once, their arguments streamed in pieces.
    scripted.script.tool_calls = [
        ("get_weather", ['{"city"', ': "Par', 'is"}']),
        ("get_time", ["{}"]),
    ]
    question = [{"role": "user", "content": "Weather and time in Paris?"}]
    for model in ("as-vllm", "as-llamacpp"):
        stream = await client.chat.completions.create(
            model=model,
            messages=question,
            tools=[WEATHER, TIME],
            tool_choice="auto",
            stream=True,  # type: ignore[list-item]
        )
        calls: dict[int, dict[str, str]] = {}
        pieces, finish = 0, None
        async for chunk in stream:
            assert chunk.model == model
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            finish = choice.finish_reason or finish
            for piece in choice.delta.tool_calls or []:
                pieces += 1
                call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                call["id"] = piece.id or call["id"]
                call["name"] += (piece.function.name if piece.function else None) or ""
                call["arguments"] += (piece.function.arguments if piece.function else None) or ""
        assert finish == "tool_calls"
        assert pieces == 2 + 4  # each call named once, then its argument pieces one by one
        assert calls == {
            0: {"id": "call_0", "name": "get_weather", "arguments": '{"city": "Paris"}'},
            1: {"id": "call_1", "name": "get_time", "arguments": "{}"},
        }
        body = scripted.bodies[-1]
        assert body["tools"] == [WEATHER, TIME] and body["tool_choice"] == "auto"

    # Not streamed: the same calls on the message; the reply is recorded with them.
    scripted.script.tool_calls = [("get_weather", ['{"city": "Paris"}'])]
    named = {"type": "function", "function": {"name": "get_weather"}}
    reply = await client.chat.completions.with_raw_response.create(
        model="as-vllm",
        messages=question,
        tools=[WEATHER, TIME],
        tool_choice=named,  # type: ignore[list-item,arg-type]
    )
    completion = reply.parse()
    assert scripted.bodies[-1]["tool_choice"] == named
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls" and message.content is None
    assert message.tool_calls is not None
    (call,) = message.tool_calls
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_0",
        "get_weather",
        '{"city": "Paris"}',
    )
    first = await transcript(api, await conversation_of(api, reply.headers["X-Turn-ID"]))
    assert [m["role"] for m in first] == ["user", "assistant"]
    assert first[1]["tool_calls"] == [call.model_dump(mode="json")]
    assert first[1]["finish_reason"] == "tool_calls"

    # The client runs the tool and sends its result back (with a PII value in it).
    scripted.script.tool_calls = []
    scripted.script.reply = ["Sunny", " in", " Paris."]
    result = json.dumps({"forecast": "sunny", "station_contact": "meteo.paris@example.com"})
    follow_up = [
        *question,
        message.model_dump(mode="json", exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": result},
    ]
    answer = await client.chat.completions.with_raw_response.create(
        model="as-vllm",
        messages=follow_up,
        tools=[WEATHER, TIME],  # type: ignore[arg-type, list-item]
    )
    assert answer.parse().choices[0].message.content == "Sunny in Paris."
    # The model got the exchange after the question, in order, the result redacted.
    sent = scripted.bodies[-1]["messages"]
    assert isinstance(sent, list)
    assert [m["role"] for m in sent[-3:]] == ["user", "assistant", "tool"]
    assert sent[-2]["tool_calls"] == [call.model_dump(mode="json")]
    assert sent[-1]["tool_call_id"] == call.id
    assert "meteo.paris@example.com" not in sent[-1]["content"] and "sunny" in sent[-1]["content"]
    # The transcript keeps the results as a `tool` message with the calls they answer.
    second = await transcript(api, await conversation_of(api, answer.headers["X-Turn-ID"]))
    assert [m["role"] for m in second] == ["user", "tool", "assistant"]
    tool = second[1]
    assert tool["tool_calls"] == [call.model_dump(mode="json")]
    (recorded_result,) = json.loads(tool["content"])
    assert recorded_result["tool_call_id"] == call.id
    assert "example.com" not in recorded_result["content"]
    assert second[2]["content"] == "Sunny in Paris." and second[2]["tool_calls"] is None
    # Compliance replay shows what the request asked: the tools, and the exchange the reply answers.
    admin = await api.headers_for(DEFAULT_TENANT, ("chat", "admin"))
    audit = await api.client.get(f"/v1/turns/{answer.headers['X-Turn-ID']}/audit", headers=admin)
    assert audit.status_code == 200, audit.text
    asked = audit.json()["input"]
    assert [t["function"]["name"] for t in asked["sampling"]["tools"]] == ["get_weather", "get_time"]
    assert [m["role"] for m in asked["tool_exchange"]] == ["assistant", "tool"]
    assert "example.com" not in str(asked)


@pytest.mark.parametrize(
    ("extra", "status", "code", "param"),
    [
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            400,
            "invalid_tool_choice",
            "tool_choice",
        ),
        ({"tool_choice": "required"}, 400, "invalid_tool_choice", "tool_choice"),
        ({"tools": [WEATHER, WEATHER]}, 400, "invalid_tools", "tools"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 7}}}]},
            400,
            "invalid_schema",
            "tools[0].function.parameters",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "tool", "tool_call_id": "c1", "content": "42"},
                ]
            },
            400,
            "invalid_tool_call_id",
            "messages[1].tool_call_id",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": "Hi",
                        "tool_calls": [
                            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                        ],
                    },
                ]
            },
            400,
            "invalid_message",
            "messages[0].tool_calls",
        ),
        ({"model": "as-tgi-native", "tools": [WEATHER]}, 400, "unsupported_parameter", "tools"),
    ],
)
async def test_a_tool_request_turnflow_cannot_take_is_refused_naming_the_field(
    recorded: tuple[ApiServer, ScriptedModelServer], extra: dict[str, Any], status: int, code: str, param: str
) -> None:
    api, scripted = recorded
    before = scripted.requests
    body = {"model": "as-vllm", "messages": [{"role": "user", "content": "Hi"}], **extra}
    resp = await api.client.post("/v1/chat/completions", json=body)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert (error["code"], error["param"]) == (code, param), error
    assert scripted.requests == before


async def test_a_tool_call_round_trip_through_the_openai_client_on_the_real_model(api: ApiServer) -> None:
    # llama.cpp constrains a named tool_choice with a grammar: SmolLM2 must produce a valid call.
    client = client_of(api)
    question = [{"role": "user", "content": "What is the weather in Oslo?"}]
    named = {"type": "function", "function": {"name": "get_weather"}}
    stream = await client.chat.completions.create(
        model="any",
        messages=question,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice=named,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=48,
        stream=True,
    )
    call = {"id": "", "name": "", "arguments": ""}
    finish = None
    async for chunk in stream:
        if chunk.choices:
            finish = chunk.choices[0].finish_reason or finish
            for piece in chunk.choices[0].delta.tool_calls or []:
                call["id"] = piece.id or call["id"]
                if piece.function:
                    call["name"] = piece.function.name or call["name"]
                    call["arguments"] += piece.function.arguments or ""
    assert finish == "tool_calls" and call["name"] == "get_weather" and call["id"], call
    arguments = json.loads(call["arguments"])
    assert set(arguments) == {"city"} and isinstance(arguments["city"], str)

    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": "get_weather", "arguments": call["arguments"]},
            }
        ],
    }
    tool = {"role": "tool", "tool_call_id": call["id"], "content": '{"forecast": "snow", "celsius": -3}'}
    answer = await client.chat.completions.create(
        model="any",
        messages=[*question, assistant, tool],  # type: ignore[list-item]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
        temperature=0,
        max_tokens=24,
    )
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.choices[0].message.content and not answer.choices[0].message.tool_calls


async def test_langchain_bind_tools_round_trip_on_the_real_model(api: ApiServer) -> None:
    # A second real client library: LangChain's ChatOpenAI, tools bound, streamed then invoked.
    from langchain_core.messages import AIMessageChunk, HumanMessage, ToolMessage
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(
        base_url=f"{api.url}/v1",
        api_key=api_key_of(api),  # type: ignore[arg-type]
        model="any",
        temperature=0,
        max_completion_tokens=48,
        max_retries=0,
    )
    weather = chat.bind_tools([WEATHER], tool_choice="get_weather")
    question = HumanMessage("What is the weather in Oslo?")
    gathered: AIMessageChunk | None = None
    async for chunk in weather.astream([question]):
        assert isinstance(chunk, AIMessageChunk)
        gathered = chunk if gathered is None else gathered + chunk
    assert gathered is not None
    (call,) = gathered.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"].get("city"), str), call
    assert gathered.response_metadata.get("finish_reason") == "tool_calls"

    result = ToolMessage('{"forecast": "snow"}', tool_call_id=call["id"])
    answer = await chat.bind_tools([WEATHER], tool_choice="none").ainvoke([question, gathered, result])
    assert isinstance(answer.content, str) and answer.content and not answer.tool_calls
