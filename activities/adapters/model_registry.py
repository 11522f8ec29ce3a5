"""The registry a process serves from: the declared models with their endpoints resolved, each with its
adapter and token counter."""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

import httpx

from activities.adapters.model_adapters import ADAPTERS, ModelAdapter
from activities.adapters.tokens import EstimatedCounter, LocalGGUFCounter, RemoteCounter, TokenizerJsonCounter
from activities.logic.prompt import TokenCounter
from infra.config.models import ModelSpec, expand_endpoint


class UnknownModel(KeyError):
    pass


def tokenizer_file(declared: str) -> Path:
    """A declared tokenizer's file: a path, or `package:NAME/PATH` inside an installed package."""
    if not declared.startswith("package:"):
        return Path(declared)
    package, _, inside = declared.removeprefix("package:").partition("/")
    found = Path(str(importlib.resources.files(package).joinpath(inside)))
    if not found.is_file():
        raise ValueError(f"tokenizer {declared!r}: {found} is not a file")
    return found


class ModelRegistry:
    def __init__(
        self,
        declared: dict[str, ModelSpec],
        *,
        model_url: str,
        embedded_gguf: Path | None,
        http: httpx.AsyncClient,
    ) -> None:
        """``model_url`` fills `{model_url}`; ``embedded_gguf`` is the file the embedded server runs
        (None when the model server is not ours)."""
        self.models = {
            name: spec.model_copy(
                update={"endpoints": [expand_endpoint(u, model_url) for u in spec.endpoints]}
            )
            for name, spec in declared.items()
        }
        self._embedded_gguf = embedded_gguf
        # Every turn's routing reads these endpoints' breakers: computed once.
        self._endpoints = sorted({url for spec in self.models.values() for url in spec.endpoints})
        # `auto` tokenizers read the GGUF only for models served where the embedded model runs.
        self._on_model_url = {n for n, spec in declared.items() if "{model_url}" in "".join(spec.endpoints)}
        self._http = http
        self._gguf_counters: dict[Path, LocalGGUFCounter] = {}
        self._adapters: dict[str, ModelAdapter] = {}

    def __contains__(self, name: object) -> bool:
        return name in self.models

    def spec(self, name: str) -> ModelSpec:
        if name not in self.models:
            raise UnknownModel(name)
        return self.models[name]

    def endpoints(self) -> list[str]:
        return self._endpoints

    def has_alternative(self, name: str) -> bool:
        """Another replica or a fallback model to move a turn to when this model's endpoint is slow."""
        spec = self.spec(name)
        return len(spec.endpoints) > 1 or bool(spec.fallback)

    def _gguf(self, path: Path) -> LocalGGUFCounter:
        if path not in self._gguf_counters:
            self._gguf_counters[path] = LocalGGUFCounter(path)
        return self._gguf_counters[path]

    def counter(self, name: str) -> TokenCounter:
        """The model's own tokenizer; the estimate only where it is declared, or the server has none."""
        spec = self.spec(name)
        tokenizer = spec.tokenizer
        if tokenizer == "auto":
            ours = self._embedded_gguf is not None and name in self._on_model_url
            # A managed OpenAI-style API has no tokenize route to ask.
            tokenizer = "embedded" if ours else "estimate" if spec.provider == "openai" else "server"
        if tokenizer == "embedded":
            if self._embedded_gguf is None:
                raise ValueError(f"model {name}: tokenizer 'embedded', but the model server is not embedded")
            return self._gguf(self._embedded_gguf)
        if tokenizer == "server":
            return RemoteCounter(self._http, spec.endpoints[0])
        if tokenizer == "estimate":
            return EstimatedCounter()
        path = tokenizer_file(tokenizer)
        if path.suffix == ".json":
            return TokenizerJsonCounter(path)
        return self._gguf(path)

    def check(self) -> None:
        """Build every model's adapter now, so a misconfigured tokenizer stops the worker at start
        instead of failing each turn."""
        for name in self.models:
            self.adapter(name)

    def adapter(self, name: str) -> ModelAdapter:
        if name not in self._adapters:
            spec = self.spec(name)
            key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
            self._adapters[name] = ADAPTERS[spec.provider](name, spec, self.counter(name), self._http, key)
        return self._adapters[name]
