"""all-MiniLM-L6-v2 for a turn's question, in ONNX Runtime, over the same shipped weights.

A question is a few dozen tokens. Its forward pass takes ~3 ms here in ONNX Runtime with BERT's
fused kernels (attention, skip layer norm, bias GELU), against ~11 ms in NumPy and ~12 ms in torch,
and a process that only embeds questions never loads torch or sentence-transformers (~500 MB and
seconds of start time). Vectors agree with sentence-transformers' to within 1e-4 cosine
(tests/activities/test_query_encoder.py).

The ONNX file is converted from the shipped safetensors at install time (`make install` runs
`python -m activities.adapters.minilm_onnx`), with torch, which the install has anyway for
ingestion. A process that finds no file, or one converted from other weights, converts it in a
subprocess, so torch still stays out of the process that asks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

# What the converted file records of the weights it came from; another value means convert again.
SOURCE_KEY = "turnflow.source"
# Bumped when the conversion itself changes (graph, pooling, fusions).
EXPORT_REVISION = "1"


def onnx_path() -> Path:
    """Beside the installation (a virtual environment, an image's prefix), not in the data dir: it
    is derived from installed files, like a compiled module."""
    return Path(sys.prefix) / "share" / "turnflow" / "all-MiniLM-L6-v2.onnx"


def source_stamp(model_dir: Path) -> str:
    """The weights' size and a digest of their first and last MiB: what they are, not when they were
    written (an image layer may not keep the time), and cheap at every start."""
    path = model_dir / "model.safetensors"
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as weights:
        digest.update(weights.read(1 << 20))
        weights.seek(max(0, size - (1 << 20)))
        digest.update(weights.read(1 << 20))
    return f"{EXPORT_REVISION}:{size}:{digest.hexdigest()[:16]}"


def export(model_dir: Path, out: Path) -> None:
    """Transformer, mean pooling over the attention mask and L2 normalisation in one graph (what the
    model's modules.json declares), then ONNX Runtime's BERT fusions. Written atomically."""
    import onnx
    import torch
    from onnxruntime.transformers import optimizer
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(str(model_dir))
    # Eager attention exports as the plain MatMul/Softmax pattern that the Attention fusion matches.
    bert = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=1)

    # The tracing exporter's warnings are about shapes it fixes; the tests check padded batches.
    warnings.simplefilter("ignore")
    example = torch.ones(2, 16, dtype=torch.long)
    axes = {0: "batch", 1: "tokens"}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
        raw = Path(scratch) / "raw.onnx"
        torch.onnx.export(
            Pooled(),
            (example, example, torch.zeros_like(example)),
            str(raw),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["embedding"],
            dynamic_axes={
                "input_ids": axes,
                "attention_mask": axes,
                "token_type_ids": axes,
                "embedding": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
        )
        fused = optimizer.optimize_model(
            str(raw),
            model_type="bert",
            num_heads=int(config.num_attention_heads),
            hidden_size=int(config.hidden_size),
            opt_level=1,
        )
        model = fused.model
        stamp = source_stamp(model_dir)
        onnx.helper.set_model_props(model, {SOURCE_KEY: stamp})
        # Weights in a file of their own, which ONNX Runtime maps instead of copying: the page cache
        # holds them once for every process, and only the embedding rows a question uses are read.
        # Its name is the stamp's, so a process loading the old graph never sees the new weights.
        data = f"{out.stem}-{hashlib.sha256(stamp.encode()).hexdigest()[:12]}.data"
        staged = Path(scratch) / out.name
        onnx.save(model, str(staged), save_as_external_data=True, location=data, size_threshold=1024)
        (Path(scratch) / data).chmod(0o644)  # onnx writes it owner-only; every service reads it
        os.replace(Path(scratch) / data, out.parent / data)
        os.replace(staged, out)
    for old in out.parent.glob(f"{out.stem}-*.data"):
        if old.name != data:
            old.unlink(missing_ok=True)


def convert_in_subprocess(model_dir: Path, out: Path) -> None:
    """Convert in a child process, so the caller never loads torch."""
    done = subprocess.run(
        [sys.executable, "-m", "activities.adapters.minilm_onnx", str(model_dir), str(out)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"converting {model_dir} to ONNX at {out} failed (run `python -m "
            f"activities.adapters.minilm_onnx` where that path is writable):\n{done.stderr[-2000:]}"
        )


class MiniLMOnnx:
    """Mean-pooled, L2-normalised sentence embeddings, float32, one row per text."""

    def __init__(self, model_dir: Path, onnx_file: Path | None = None) -> None:
        import onnxruntime as ort

        config = json.loads((model_dir / "config.json").read_text())
        max_len = json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"]
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_len)
        self.tokenizer.enable_padding(pad_id=int(config.get("pad_token_id", 0)))
        options = ort.SessionOptions()
        # Two threads halve a question's latency here (2.8 ms against 4.6); more only contend with
        # the process's other work. No spinning: an idle pool that spins burns a core per turn.
        options.intra_op_num_threads = min(2, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # No arena: it keeps the largest buffers any run needed, per thread that ran one (questions
        # encode on asyncio's threads), and gives nothing back. Measured: an API process at 256 streams
        # peaked at 380 MB without it, 433 MB with it; a question's latency is unchanged (3.3-3.5 ms).
        options.enable_cpu_mem_arena = False
        path = onnx_file or onnx_path()

        def session() -> ort.InferenceSession:
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        wanted = source_stamp(model_dir)
        current: ort.InferenceSession | None = None
        if path.exists():
            with contextlib.suppress(Exception):  # e.g. its weights file is gone: convert again
                current = session()
        if current is None or current.get_modelmeta().custom_metadata_map.get(SOURCE_KEY) != wanted:
            convert_in_subprocess(model_dir, path)  # missing, broken, or from other weights
            current = session()
        self._session = current

    def encode(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer.encode_batch(texts)
        feed = {
            "input_ids": np.array([e.ids for e in batch], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in batch], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in batch], dtype=np.int64),
        }
        return np.asarray(self._session.run(None, feed)[0], dtype=np.float32)


def main(argv: list[str]) -> None:
    """``python -m activities.adapters.minilm_onnx [MODEL_DIR [OUT]]``: convert the shipped model."""
    from activities.adapters.embedder import minilm_path

    model_dir = Path(argv[0]) if argv else minilm_path()
    out = Path(argv[1]) if len(argv) > 1 else onnx_path()
    export(model_dir, out)
    print(out)


if __name__ == "__main__":
    main(sys.argv[1:])
