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
from huggingface_hub import AsyncInferenceClient

from activities.logic.prompt import Message, TokenCounter
from infra.config.models import ModelSpec

CLIENT_TIMEOUT_S = 60.0
# TGI's native finish reasons, in OpenAI's words.
_TGI_FINISH = {"eos_token": "stop", "stop_sequence": "stop", "length": "length"}


@dataclass(frozen=True)
class Delta:
    """A piece of the reply: text, and at the end a finish reason and the server's token counts."""

    text: str = ""
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    # The model the server says answered (GenAI `gen_ai.response.model`).
    model: str | None = None


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

    def client(self, endpoint: str) -> AsyncInferenceClient:
        if endpoint not in self._clients:
            self._clients[endpoint] = AsyncInferenceClient(
                base_url=f"{endpoint}/v1",
                api_key=self.api_key,
                headers=self.headers(),
                timeout=CLIENT_TIMEOUT_S,
            )
        return self._clients[endpoint]

    def _options(self, max_tokens: int, temperature: float | None) -> dict[str, Any]:
        params = self.spec.params
        options: dict[str, Any] = {
            "max_tokens": max_tokens,
            "temperature": temperature if temperature is not None else params.temperature,
            "top_p": params.top_p,
            "stop": params.stop or None,
        }
        if self.spec.served_name:
            options["model"] = self.spec.served_name
        if self.sends_usage_option:
            options["stream_options"] = {"include_usage": True}
        if extra := self.extra_body():
            options["extra_body"] = extra
        return {k: v for k, v in options.items() if v is not None}

    async def stream_chat(
        self, endpoint: str, messages: list[Message], max_tokens: int, temperature: float | None
    ) -> AsyncIterator[Delta]:
        stream = await self.client(endpoint).chat_completion(
            messages=messages,
            stream=True,
            **self._options(max_tokens, temperature),
        )
        async for chunk in stream:
            usage = getattr(chunk, "usage", None)
            if usage is not None and (usage.prompt_tokens or usage.completion_tokens):
                yield Delta(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens)
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            yield Delta(
                text=choice.delta.content or "", finish_reason=choice.finish_reason, model=chunk.model or None
            )

    async def count_tokens(self, text: str) -> int:
        return await self.counter.count(text)

    async def health(self, endpoint: str) -> bool:
        try:
            resp = await self.http.get(endpoint + self.health_path, headers=self.headers(), timeout=5.0)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200


class OpenAIAdapter(ModelAdapter):
    """A managed OpenAI-style API: ask it not to keep the conversation (`store: false`)."""

    def extra_body(self) -> dict[str, Any] | None:
        return {"store": False}


class VllmAdapter(ModelAdapter):
    """vLLM's OpenAI-compatible server: chat completions under its served model name, its own
    `/health`, prompts counted by its `/tokenize`; the usage chunk at the end carries exact counts."""

    health_path = "/health"


class LlamaCppAdapter(ModelAdapter):
    """llama.cpp's (and llama-cpp-python's) server: every streamed chunk is one token; no usage chunk."""

    sends_usage_option = False


class TgiAdapter(ModelAdapter):
    """text-generation-inference: its OpenAI route, or its native stream with per-token details."""

    health_path = "/health"

    async def stream_chat(
        self, endpoint: str, messages: list[Message], max_tokens: int, temperature: float | None
    ) -> AsyncIterator[Delta]:
        if self.spec.stream_api == "chat":
            async for delta in super().stream_chat(endpoint, messages, max_tokens, temperature):
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
        temperature = temperature if temperature is not None else self.spec.params.temperature
        client = AsyncInferenceClient(model=endpoint, api_key=self.api_key, headers=self.headers())
        stream = await client.text_generation(
            prompt,
            stream=True,
            details=True,
            max_new_tokens=max_tokens,
            # TGI refuses temperature 0: greedy decoding is "no sampling".
            do_sample=bool(temperature),
            temperature=temperature or None,
            top_p=self.spec.params.top_p,
            stop=self.spec.params.stop or None,
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
