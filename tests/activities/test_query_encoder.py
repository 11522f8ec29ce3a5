"""The ONNX query encoder gives sentence-transformers' vectors, converts itself again when its file is
missing or came from other weights, and a process that only embeds questions never imports torch."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from activities.adapters.embedder import LocalEmbedder, minilm_path
from activities.adapters.minilm_onnx import SOURCE_KEY, MiniLMOnnx, onnx_path, source_stamp

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


def test_onnx_vectors_match_sentence_transformers(reference: np.ndarray) -> None:
    encoder = MiniLMOnnx(minilm_path())
    ours = encoder.encode(TEXTS)
    assert ours.shape == reference.shape == (len(TEXTS), 384)
    assert ours.dtype == np.float32
    cosines = (ours * reference).sum(axis=1)
    assert cosines.min() > 1 - 1e-4, cosines
    # One at a time (no padding in the batch) gives the same vectors as the padded batch.
    alone = np.vstack([encoder.encode([t]) for t in TEXTS[:2]])
    assert np.abs(alone - ours[:2]).max() < 1e-5


def test_a_missing_or_stale_onnx_file_is_converted_again(tmp_path: Path, reference: np.ndarray) -> None:
    import onnx

    model_dir = tmp_path / "model"
    shutil.copytree(minilm_path(), model_dir, copy_function=shutil.copy)
    # Copied weights (written now, as an image layer may leave them) are still the same weights.
    assert source_stamp(model_dir) == source_stamp(minilm_path())
    # The installed graph, stamped as converted from other weights: it no longer fits.
    stale = tmp_path / onnx_path().name
    for path in onnx_path().parent.glob(f"{onnx_path().stem}*"):  # the graph and its weights
        shutil.copy(path, tmp_path)
    graph = onnx.load(str(stale), load_external_data=False)
    for prop in graph.metadata_props:
        if prop.key == SOURCE_KEY:
            prop.value = "0:0:other-weights"
    onnx.save(graph, str(stale))
    encoder = MiniLMOnnx(model_dir, stale)
    stamp = {p.key: p.value for p in onnx.load(str(stale), load_external_data=False).metadata_props}
    assert stamp[SOURCE_KEY] == source_stamp(model_dir)
    assert float(encoder.encode(TEXTS[:1])[0] @ reference[0]) > 1 - 1e-4
    # One weights file is left beside the graph: the one the new conversion wrote.
    assert len(list(tmp_path.glob("*.data"))) == 1
    # No file at all: converted on first use.
    missing = tmp_path / "fresh" / "encoder.onnx"
    assert float(MiniLMOnnx(model_dir, missing).encode(TEXTS[:1])[0] @ reference[0]) > 1 - 1e-4
    assert missing.exists()


async def test_small_and_large_batches_agree(reference: np.ndarray) -> None:
    embedder = LocalEmbedder()
    small = np.asarray(await embedder.embed(TEXTS[:1]))  # the ONNX path
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
        "heavy = ('torch', 'sentence_transformers', 'transformers', 'onnx')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
