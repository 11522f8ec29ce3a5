"""The NumPy query encoder gives sentence-transformers' vectors, and a process that only embeds
questions never imports torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from activities.adapters.embedder import LocalEmbedder, minilm_path
from activities.adapters.minilm_numpy import MiniLMNumpy

TEXTS = [
    "What is the refund policy for annual plans?",
    "hi",
    "",
    "Die Katze schläft den ganzen Tag auf der warmen Fensterbank.",
    "Tokens past the model's 256-token window are cut: " + "lighthouse " * 400,
    "Émoji 🙂 and CJK 灯塔 and numbers 1887, 3.14159",
]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)
    return np.asarray(model.encode(TEXTS, normalize_embeddings=True, show_progress_bar=False))


def test_numpy_vectors_match_sentence_transformers(reference: np.ndarray) -> None:
    ours = MiniLMNumpy(minilm_path()).encode(TEXTS)
    assert ours.shape == reference.shape == (len(TEXTS), 384)
    cosines = (ours * reference).sum(axis=1)
    assert cosines.min() > 1 - 1e-4, cosines
    # One at a time (no padding in the batch) gives the same vectors as the padded batch.
    alone = np.vstack([MiniLMNumpy(minilm_path()).encode([t]) for t in TEXTS[:2]])
    assert np.abs(alone - ours[:2]).max() < 1e-5


async def test_small_and_large_batches_agree(reference: np.ndarray) -> None:
    embedder = LocalEmbedder()
    small = np.asarray(await embedder.embed(TEXTS[:1]))  # the NumPy path
    large = np.asarray(await embedder.embed(TEXTS * 2))  # sentence-transformers
    assert len(TEXTS) * 2 > LocalEmbedder.SMALL_BATCH >= 1
    assert float(small[0] @ large[0]) > 1 - 1e-4
    assert float(small[0] @ reference[0]) > 1 - 1e-4
    # The batch path (bf16 matmuls where the CPU has the units) stays within 1e-4 of fp32's vectors.
    assert (large[: len(TEXTS)] * reference).sum(axis=1).min() > 1 - 1e-4
    assert await embedder.embed([]) == []


def test_embedding_a_question_does_not_import_torch() -> None:
    probe = (
        "import asyncio, sys\n"
        "from activities.adapters.embedder import LocalEmbedder\n"
        "e = LocalEmbedder()\n"
        "asyncio.run(e.warm_up())\n"
        "[v] = asyncio.run(e.embed(['why do lighthouses have lenses?']))\n"
        "assert len(v) == 384\n"
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
