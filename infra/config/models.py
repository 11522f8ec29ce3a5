"""The model registry: the `models:` and `breaker:` sections of temporal.yaml, typed and validated.

A model is a name and a version served by one provider at one or more endpoints (replicas), with a
tier, a context length, prices, residency tags and default generation parameters. Fallback chains
and canaries are declared here too; the router (activities/logic/routing.py) reads nothing else.
"""

from __future__ import annotations

import os
from datetime import timedelta
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from infra.config.durations import Duration

# vllm: its OpenAI-compatible server (with its own /tokenize and /health); openai: a managed API.
Provider = Literal["tgi", "vllm", "openai", "llamacpp"]
Tier = Literal["gpu", "cpu-quantized", "managed"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Cost(_Strict):
    """US dollars per 1,000 tokens."""

    input_per_1k: Decimal = Field(default=Decimal(0), ge=0)
    output_per_1k: Decimal = Field(default=Decimal(0), ge=0)


class GenerationParams(_Strict):
    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: list[str] = Field(default_factory=list)


class ModelSpec(_Strict):
    version: str
    provider: Provider
    # Replicas of the same model; a conversation sticks to one (rendezvous hashing).
    endpoints: list[str] = Field(min_length=1)
    tier: Tier
    context: int = Field(gt=0, description="context length in tokens")
    max_output_tokens: int | None = Field(default=None, gt=0)
    # Higher is better; routing takes the highest-fidelity model it may use.
    fidelity: int = 0
    # What a first token usually takes; a request's latency budget is compared with it.
    typical_ttft_ms: int = Field(default=1000, gt=0)
    cost: Cost = Cost()
    residency: list[str] = Field(default_factory=list)
    params: GenerationParams = GenerationParams()
    # Models to try, in order, when this one fails or its breaker is open.
    fallback: list[str] = Field(default_factory=list)
    # A canary is a new version of another model: it takes `share` of that model's conversations.
    canary_of: str | None = None
    share: float = Field(default=0.0, ge=0, le=1)
    # The `model` field sent to the server (managed APIs need it); default: none for TGI/llama.cpp.
    served_name: str | None = None
    # The environment variable holding the API key (keys never live in this file).
    api_key_env: str | None = None
    # Extra headers on every request: provider-specific privacy knobs live here.
    headers: dict[str, str] = Field(default_factory=dict)
    # TGI only: stream through the OpenAI-style route, or TGI's native one with token details.
    stream_api: Literal["chat", "generate"] = "chat"
    # How prompts are counted: `auto` (the embedded model's GGUF when it is ours, else the server's
    # tokenize route, else the estimate), `server`, `embedded`, `estimate` (one token per 3 bytes),
    # or a GGUF or tokenizer.json file: a path, or `package:NAME/PATH` inside an installed package.
    tokenizer: str = "auto"
    # Takes image parts in user messages (OpenAI's `image_url`): a vision-language model.
    vision: bool = False

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://", "{model_url}")) and "${" not in url:
                raise ValueError(f"endpoint {url!r} is not an http(s) URL")
        return value

    @property
    def is_canary(self) -> bool:
        return self.canary_of is not None


class BreakerPolicy(_Strict):
    """When a model endpoint's circuit opens (shared by every worker through Redis)."""

    window: Duration = timedelta(seconds=30)
    min_calls: int = Field(default=4, ge=1, description="calls in the window before the rate counts")
    failure_rate: float = Field(default=0.5, gt=0, le=1, description="failed or slow share that opens it")
    consecutive_failures: int = Field(
        default=3, ge=1, description="failed or slow calls in a row that open it"
    )
    slow_call: Duration = Field(default=timedelta(seconds=5), description="a first token later than this")
    cooldown: Duration = Field(default=timedelta(seconds=15), description="open this long, then one probe")


def check_registry(models: dict[str, ModelSpec]) -> None:
    """Cross-references: fallbacks and canaries name declared models, and no chain loops."""
    for name, spec in models.items():
        for target in spec.fallback:
            if target not in models:
                raise ValueError(f"models.{name}.fallback names unknown model {target!r}")
            if target == name:
                raise ValueError(f"models.{name}.fallback names itself")
        if spec.canary_of is not None:
            base = models.get(spec.canary_of)
            if base is None:
                raise ValueError(f"models.{name}.canary_of names unknown model {spec.canary_of!r}")
            if base.is_canary:
                raise ValueError(f"models.{name}.canary_of names another canary")
    for name in models:
        seen, frontier = {name}, list(models[name].fallback)
        while frontier:
            target = frontier.pop()
            if target == name:
                raise ValueError(f"models.{name}: its fallback chain loops back to it")
            if target not in seen:
                seen.add(target)
                frontier.extend(models[target].fallback)


def expand_endpoint(url: str, model_url: str) -> str:
    """`{model_url}` is TURNFLOW_TGI_URL or the embedded model server; `${VAR}` reads the environment."""
    expanded = os.path.expandvars(url.replace("{model_url}", model_url)).rstrip("/")
    if "${" in expanded:
        raise ValueError(f"endpoint {url!r} names an unset environment variable")
    return expanded[: -len("/v1")] if expanded.endswith("/v1") else expanded
