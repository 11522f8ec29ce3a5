"""The provider adapters against their wire formats: TGI's native stream and vLLM's OpenAI-compatible
server (stand-ins, since neither runs here) and the real llama.cpp server."""

from __future__ import annotations

import httpx

from activities.adapters.model_adapters import LlamaCppAdapter, TgiAdapter, VllmAdapter
from activities.adapters.tokens import RemoteCounter
from infra.config.models import ModelSpec
from tests.support.services import Services
from tests.support.tgi_stand_in import TgiStandIn
from tests.support.vllm_stand_in import VllmStandIn


def spec(url: str, **fields: object) -> ModelSpec:
    return ModelSpec.model_validate(
        {"version": "1", "provider": "tgi", "endpoints": [url], "tier": "gpu", "context": 4096, **fields}
    )


async def test_tgi_native_stream_yields_text_with_token_details() -> None:
    tokens = [("Hello", False), (" world", False), ("</s>", True)]
    async with TgiStandIn(tokens) as tgi, httpx.AsyncClient() as http:
        adapter = TgiAdapter(
            "tgi", spec(tgi.url, stream_api="generate"), RemoteCounter(http, tgi.url), http, api_key=None
        )
        deltas = [d async for d in adapter.stream_chat(tgi.url, [{"role": "user", "content": "Hi"}], 16, 0.0)]
        healthy = await adapter.health(tgi.url)
    # The special end-of-sequence token carries no text; the last event brings the exact counts.
    assert "".join(d.text for d in deltas) == "Hello world"
    assert deltas[-1].finish_reason == "stop" and deltas[-1].output_tokens == 3
    # The prompt's size as TGI's own template and tokenizer made it (the stand-in splits on spaces:
    # "<|im_start|>user", "Hi<|im_end|>", "<|im_start|>assistant").
    assert deltas[-1].input_tokens == 3
    sent = tgi.generate_bodies[0]
    assert str(sent["inputs"]).startswith("<|im_start|>user\nHi")
    assert sent["parameters"]["max_new_tokens"] == 16 and sent["parameters"]["do_sample"] is False  # type: ignore[index]
    assert healthy


async def test_llamacpp_adapter_streams_and_counts_with_the_real_server(services: Services) -> None:
    url = services.endpoints.model_url
    async with httpx.AsyncClient() as http:
        adapter = LlamaCppAdapter(
            "smollm2", spec(url, provider="llamacpp"), RemoteCounter(http, url), http, api_key=None
        )
        deltas = [d async for d in adapter.stream_chat(url, [{"role": "user", "content": "Say hi."}], 5, 0.0)]
        counted = await adapter.count_tokens("Say hi.")
        healthy = await adapter.health(url)
        down = await adapter.health("http://127.0.0.1:9")
    texts = [d.text for d in deltas if d.text]
    assert 1 <= len(texts) <= 5 and deltas[-1].finish_reason in ("stop", "length")
    assert counted >= 2 and healthy and not down


async def test_vllm_adapter_names_its_served_model_counts_with_its_tokenizer_and_reads_usage() -> None:
    async with VllmStandIn("llama-8b", ["Hel", "lo", "!"]) as vllm, httpx.AsyncClient() as http:
        model = spec(vllm.url, provider="vllm", served_name="llama-8b", tokenizer="server")
        adapter = VllmAdapter("llama-8b", model, RemoteCounter(http, vllm.url), http, api_key=None)
        deltas = [d async for d in adapter.stream_chat(vllm.url, [{"role": "user", "content": "Hi"}], 8, 0.0)]
        counted = await adapter.count_tokens("four words right here")
        healthy = await adapter.health(vllm.url)
    assert "".join(d.text for d in deltas) == "Hello!"
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["stop"]
    # The final usage chunk: exact counts from the server.
    assert any(d.input_tokens == 7 and d.output_tokens == 3 for d in deltas)
    assert vllm.chat_bodies[0]["model"] == "llama-8b" and vllm.chat_bodies[0]["max_tokens"] == 8
    # vLLM's /tokenize takes `prompt` (TGI's `inputs` and llama.cpp's `content` ride along, ignored).
    assert counted == 4 and vllm.tokenize_bodies[0]["prompt"] == "four words right here"
    assert healthy
