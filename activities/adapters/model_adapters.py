"""Provider adapters: one interface (stream a chat, count tokens, check health) over TGI, any
OpenAI-compatible server or managed API, and the local llama.cpp server. Routing and the turn never
see which provider they talk to; provider-specific knobs live here.

All of them go through huggingface_hub's AsyncInferenceClient. Provider-side retries stay off:
Temporal owns retries, and the circuit breakers own giving up on an endpoint.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from huggingface_hub import AsyncInferenceClient, TextGenerationInputGrammarType

from activities.adapters.tokens import with_text_content
from activities.contracts.sampling import ResponseFormat, Sampling
from activities.contracts.turn import Message
from activities.logic.prompt import TokenCounter
from infra.config.models import ModelSpec

CLIENT_TIMEOUT_S = 60.0
# What an OpenAI-compatible server takes of a request's sampling (activities/contracts/sampling.py).
OPENAI_PARAMETERS = frozenset(
    {
        "stop",
        "top_p",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
        "tools",
        "tool_choice",
    }
)
# TGI's native finish reasons, in OpenAI's words.
_TGI_FINISH = {"eos_token": "stop", "stop_sequence": "stop", "length": "length"}


@dataclass(frozen=True)
class ToolCallPiece:
    """A piece of a tool call, in OpenAI's delta form: the first piece of call ``index`` names it
    (id and name), later ones carry more of its arguments."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class Delta:
    """A piece of the reply: text, and at the end a finish reason and the server's token counts."""

    text: str = ""
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    # The model the server says answered (GenAI `gen_ai.response.model`).
    model: str | None = None
    tool_calls: tuple[ToolCallPiece, ...] = ()


class ModelAdapter:
    """OpenAI-style chat completions (`/v1/chat/completions`), for any compatible server."""

    health_path = "/v1/models"
    # Ask for the final usage chunk (OpenAI `stream_options.include_usage`): exact token counts.
    sends_usage_option = True

    def __init__(
        self, name: str, spec: ModelSpec, counter: TokenCounter, http: httpx.AsyncClient, api_key: str | None
    ) -> None:
        self.name = name
        self.spec = spec
        self.counter = counter
        self.http = http
        self.api_key = api_key
        self._clients: dict[str, AsyncInferenceClient] = {}

    def headers(self) -> dict[str, str]:
        return dict(self.spec.headers)

    def extra_body(self) -> dict[str, Any] | None:
        return None

    @property
    def parameters(self) -> frozenset[str]:
        """The sampling parameters this server honours; a request asking another is refused (400)."""
        return OPENAI_PARAMETERS

    # Whether constrained output may follow a JSON schema. OpenAI's own spelling cannot be sent:
    # huggingface_hub's client rewrites a `json_schema` response_format into TGI's, which an
    # OpenAI-style API does not read; servers with a spelling of their own override this.
    follows_schemas = False

    def constrained_output(self, fmt: ResponseFormat) -> dict[str, Any]:
        """The request body's fields that ask this server for JSON output (`json_object` here)."""
        return {"response_format": {"type": "json_object"}}

    def wire_messages(self, messages: list[Message]) -> list[Message]:
        """The messages as this server's chat template can take them."""
        return messages

    def client(self, endpoint: str) -> AsyncInferenceClient:
        if endpoint not in self._clients:
            self._clients[endpoint] = AsyncInferenceClient(
                base_url=f"{endpoint}/v1",
                api_key=self.api_key,
                headers=self.headers(),
                timeout=CLIENT_TIMEOUT_S,
            )
        return self._clients[endpoint]

    def _options(
        self, max_tokens: int, temperature: float | None, sampling: Sampling | None
    ) -> dict[str, Any]:
        params, asked = self.spec.params, sampling or Sampling()
        fmt = asked.response_format
        options: dict[str, Any] = {
            "max_tokens": max_tokens,
            "temperature": temperature if temperature is not None else params.temperature,
            "top_p": asked.top_p if asked.top_p is not None else params.top_p,
            # The model's own stops (its template's end markers) stay; the request's come on top.
            "stop": [*params.stop, *(asked.stop or [])] or None,
            "seed": asked.seed,
            "presence_penalty": asked.presence_penalty,
            "frequency_penalty": asked.frequency_penalty,
        }
        if self.spec.served_name:
            options["model"] = self.spec.served_name
        if self.sends_usage_option:
            options["stream_options"] = {"include_usage": True}
        extra = dict(self.extra_body() or {})
        if asked.wants_json and fmt:
            extra |= self.constrained_output(fmt)
        if asked.tools:
            # In the body as OpenAI spells them (the client's typed tool classes would add nulls).
            extra["tools"] = [t.model_dump(mode="json", exclude_none=True) for t in asked.tools]
            if asked.tool_choice is not None:
                choice = asked.tool_choice
                extra["tool_choice"] = choice if isinstance(choice, str) else choice.model_dump(mode="json")
        if extra:
            options["extra_body"] = extra
        return {k: v for k, v in options.items() if v is not None}

    async def stream_chat(
        self,
        endpoint: str,
        messages: list[Message],
        max_tokens: int,
        temperature: float | None,
        sampling: Sampling | None = None,
    ) -> AsyncIterator[Delta]:
        stream = await self.client(endpoint).chat_completion(
            messages=self.wire_messages(messages),
            stream=True,
            **self._options(max_tokens, temperature, sampling),
        )
        async for chunk in stream:
            usage = getattr(chunk, "usage", None)
            if usage is not None and (usage.prompt_tokens or usage.completion_tokens):
                yield Delta(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens)
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            yield Delta(
                text=choice.delta.content or "",
                finish_reason=choice.finish_reason,
                model=chunk.model or None,
                tool_calls=_tool_pieces(choice.delta),
            )

    async def count_tokens(self, text: str) -> int:
        return await self.counter.count(text)

    async def health(self, endpoint: str) -> bool:
        try:
            resp = await self.http.get(endpoint + self.health_path, headers=self.headers(), timeout=5.0)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200


def _tool_pieces(delta: Any) -> tuple[ToolCallPiece, ...]:
    calls = getattr(delta, "tool_calls", None) or []
    # huggingface_hub types `tool_calls` as a list, but some servers send one object.
    if not isinstance(calls, list):
        calls = [calls]
    pieces = []
    for position, call in enumerate(calls):
        function = getattr(call, "function", None)
        index = getattr(call, "index", None)
        pieces.append(
            ToolCallPiece(
                index=index if isinstance(index, int) else position,
                id=getattr(call, "id", None) or None,
                name=getattr(function, "name", None) or None,
                arguments=getattr(function, "arguments", None) or "",
            )
        )
    return tuple(pieces)


class OpenAIAdapter(ModelAdapter):
    """A managed OpenAI-style API: ask it not to keep the conversation (`store: false`)."""

    def extra_body(self) -> dict[str, Any] | None:
        return {"store": False}


class VllmAdapter(ModelAdapter):
    """vLLM's OpenAI-compatible server: chat completions under its served model name, its own
    `/health`, prompts counted by its `/tokenize`; the usage chunk at the end carries exact counts."""

    health_path = "/health"
    follows_schemas = True

    def constrained_output(self, fmt: ResponseFormat) -> dict[str, Any]:
        # vLLM 0.12 and later (`guided_json` before it).
        if fmt.schema_ is not None:
            return {"structured_outputs": {"json": fmt.schema_}}
        return super().constrained_output(fmt)


class LlamaCppAdapter(ModelAdapter):
    """llama.cpp's (and llama-cpp-python's) server: every streamed chunk is one token; no usage chunk.
    Constrained output is `json_object` with an optional `schema` (both servers read it so)."""

    sends_usage_option = False
    follows_schemas = True

    def wire_messages(self, messages: list[Message]) -> list[Message]:
        # llama-cpp-python renders the GGUF's own template, and most know no tool calls (a null
        # content breaks them): an assistant's calls are written out as its text.
        return [with_text_content(m) for m in messages]

    def constrained_output(self, fmt: ResponseFormat) -> dict[str, Any]:
        schema = fmt.schema_
        return {
            "response_format": {"type": "json_object", **({"schema": schema} if schema is not None else {})}
        }


class TgiAdapter(ModelAdapter):
    """text-generation-inference: its OpenAI route, or its native stream with per-token details."""

    health_path = "/health"

    @property
    def parameters(self) -> frozenset[str]:
        # The native route has no presence penalty, and takes no tools.
        native = {"presence_penalty", "tools", "tool_choice"}
        return OPENAI_PARAMETERS - (native if self.spec.stream_api == "generate" else set())

    follows_schemas = True

    def constrained_output(self, fmt: ResponseFormat) -> dict[str, Any]:
        # TGI's grammar: JSON, constrained to a schema (any object for plain JSON mode).
        return {"response_format": {"type": "json_object", "value": fmt.schema_ or {"type": "object"}}}

    async def stream_chat(
        self,
        endpoint: str,
        messages: list[Message],
        max_tokens: int,
        temperature: float | None,
        sampling: Sampling | None = None,
    ) -> AsyncIterator[Delta]:
        if self.spec.stream_api == "chat":
            async for delta in super().stream_chat(endpoint, messages, max_tokens, temperature, sampling):
                yield delta
            return
        # The native route takes a prompt: TGI renders its own chat template (`/chat_tokenize`).
        resp = await self.http.post(
            f"{endpoint}/chat_tokenize",
            json={"model": self.spec.served_name or "tgi", "messages": messages},
            headers=self.headers(),
        )
        resp.raise_for_status()
        rendered = resp.json()
        prompt = str(rendered["templated_text"])
        asked, params = sampling or Sampling(), self.spec.params
        temperature = temperature if temperature is not None else params.temperature
        fmt = asked.response_format if asked.wants_json else None
        schema = (fmt.schema_ or {"type": "object"}) if fmt else None
        stop = [*params.stop, *(asked.stop or [])]
        client = AsyncInferenceClient(model=endpoint, api_key=self.api_key, headers=self.headers())
        stream = await client.text_generation(
            prompt,
            stream=True,
            details=True,
            max_new_tokens=max_tokens,
            # TGI refuses temperature 0: greedy decoding is "no sampling".
            do_sample=bool(temperature),
            temperature=temperature or None,
            top_p=asked.top_p if asked.top_p is not None else params.top_p,
            stop=stop or None,
            seed=asked.seed,
            frequency_penalty=asked.frequency_penalty,
            grammar=TextGenerationInputGrammarType(type="json", value=schema) if schema else None,
        )
        async for event in stream:
            text = "" if event.token.special else event.token.text
            if event.details is not None:
                yield Delta(
                    text=text,
                    finish_reason=_TGI_FINISH.get(str(event.details.finish_reason), "stop"),
                    input_tokens=len(rendered.get("tokenize_response") or []) or None,
                    output_tokens=event.details.generated_tokens,
                )
            else:
                yield Delta(text=text)


ADAPTERS: dict[str, type[ModelAdapter]] = {
    "openai": OpenAIAdapter,
    "vllm": VllmAdapter,
    "llamacpp": LlamaCppAdapter,
    "tgi": TgiAdapter,
}
