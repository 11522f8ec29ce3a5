"""all-MiniLM-L6-v2's forward pass in NumPy, over the same shipped weights (safetensors) and tokenizer.

A question is a few dozen tokens: its six small BERT layers take ~10 ms in NumPy here, as in torch
(~12 ms), while torch and sentence-transformers cost a process ~500 MB of memory and seconds of
start time. So the API process (its eager worker embeds turns' questions) never loads them; bulk
ingestion keeps sentence-transformers (activities/adapters/embedder.py). Vectors agree with
sentence-transformers' to within 1e-6 cosine (tests/activities/test_query_encoder.py).
"""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

LAYER_NORM_EPS = 1e-12


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return np.asarray((x - mean) / np.sqrt(var + LAYER_NORM_EPS) * weight + bias)


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): BERT's GELU is the exact, erf-based one, and
    # NumPy has no erf of its own.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return np.asarray(sign * (1.0 - poly * np.exp(-a * a)))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x * np.float32(0.7071067811865476)))


_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def mapped_safetensors(path: Path) -> dict[str, np.ndarray]:
    """A safetensors file's tensors as read-only arrays over a memory map of it. (The safetensors
    package copies each tensor into memory for NumPy.) The format: an 8-byte little-endian header
    length, a JSON header of dtype, shape and byte offsets per tensor, then the data."""
    with path.open("rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    (size,) = struct.unpack("<Q", mapped[:8])
    header = json.loads(mapped[8 : 8 + size])
    tensors = {}
    for name, spec in header.items():
        if name == "__metadata__" or spec["dtype"] not in _DTYPES:
            continue
        start, end = spec["data_offsets"]
        dtype = np.dtype(_DTYPES[spec["dtype"]])
        flat = np.frombuffer(
            mapped, dtype=dtype, count=(end - start) // dtype.itemsize, offset=8 + size + start
        )
        tensors[name] = flat.reshape(spec["shape"])
    return tensors


class MiniLMNumpy:
    """Mean-pooled, L2-normalised sentence embeddings (what sentence-transformers' modules.json
    declares for this model: Transformer, mean Pooling, Normalize)."""

    def __init__(self, path: Path) -> None:
        config = json.loads((path / "config.json").read_text())
        max_len = json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"]
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        # The weights stay in the file, mapped (the page cache holds them, shared by every process on
        # the machine), and only the embedding rows a question uses are ever read.
        self.w = {
            k: v for k, v in mapped_safetensors(path / "model.safetensors").items() if v.dtype == np.float32
        }
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_len)
        self.tokenizer.enable_padding(pad_id=int(config.get("pad_token_id", 0)))

    def _dense(self, x: np.ndarray, name: str) -> np.ndarray:
        # Two-dimensional and weight first, so the product runs in BLAS on the mapped weight as it is
        # stored (out by in), without a copy; the fastest of the orders measured here.
        flat = (self.w[f"{name}.weight"] @ x.reshape(-1, x.shape[-1]).T).T + self.w[f"{name}.bias"]
        return np.asarray(flat.reshape(*x.shape[:-1], flat.shape[-1]))

    def encode(self, texts: list[str]) -> np.ndarray:
        """One row per text, float32, unit length."""
        batch = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in batch], dtype=np.int64)
        mask = np.array([e.attention_mask for e in batch], dtype=np.float32)
        types = np.array([e.type_ids for e in batch], dtype=np.int64)
        w = self.w
        n, length = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][np.arange(length)][None, :, :]
            + w["embeddings.token_type_embeddings.weight"][types]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        hidden = x.shape[-1]
        head = hidden // self.heads
        # Padding never attends: a large negative bias before the softmax, as BERT does.
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        for i in range(self.layers):
            p = f"encoder.layer.{i}"

            def split(t: np.ndarray) -> np.ndarray:
                return t.reshape(n, length, self.heads, head).transpose(0, 2, 1, 3)

            q = split(self._dense(x, f"{p}.attention.self.query"))
            k = split(self._dense(x, f"{p}.attention.self.key"))
            v = split(self._dense(x, f"{p}.attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(head)) + bias
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            probs = scores / scores.sum(axis=-1, keepdims=True)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(n, length, hidden)
            attended = self._dense(context, f"{p}.attention.output.dense")
            x = _layer_norm(
                x + attended,
                w[f"{p}.attention.output.LayerNorm.weight"],
                w[f"{p}.attention.output.LayerNorm.bias"],
            )
            inner = _gelu(self._dense(x, f"{p}.intermediate.dense"))
            out = self._dense(inner, f"{p}.output.dense")
            x = _layer_norm(x + out, w[f"{p}.output.LayerNorm.weight"], w[f"{p}.output.LayerNorm.bias"])
        pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.maximum(norms, 1e-12), dtype=np.float32)
