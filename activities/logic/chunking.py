"""Token-aware chunking with overlap, counted with the embedding model's own tokenizer.

Sentences are packed into chunks of at most ``max_tokens``; each chunk starts with the last
sentences of the previous one (up to ``overlap_tokens``) so a fact split across a boundary is whole
in one of them. A sentence longer than a chunk is cut on token boundaries.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\n{2,}")


@dataclass(frozen=True)
class ChunkerSettings:
    max_tokens: int = 200
    overlap_tokens: int = 40
    tokenizer: str = "sentence-transformers/all-MiniLM-L6-v2"

    def as_record(self) -> dict[str, object]:
        return {"strategy": "sentences-v1", **asdict(self)}


@dataclass(frozen=True)
class TextChunk:
    text: str
    token_count: int


class Chunker:
    def __init__(self, tokenizer_file: Path, settings: ChunkerSettings | None = None) -> None:
        self.settings = settings or ChunkerSettings()
        if not 0 <= self.settings.overlap_tokens < self.settings.max_tokens:
            raise ValueError("overlap_tokens must be at least 0 and below max_tokens")
        self._file = tokenizer_file

    @cached_property
    def _tokenizer(self):  # type: ignore[no-untyped-def]
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self._file))
        # The model's file pads and truncates to its window; counting needs the true lengths.
        tokenizer.no_padding()
        tokenizer.no_truncation()
        return tokenizer

    def count(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]

    def chunk(self, text: str) -> list[TextChunk]:
        limit, overlap = self.settings.max_tokens, self.settings.overlap_tokens
        sentences = [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]
        pieces: list[tuple[str, int]] = []
        for sentence, n in zip(sentences, self.count(sentences), strict=True):
            pieces.extend(self._split_long(sentence) if n > limit else [(sentence, n)])

        chunks: list[TextChunk] = []
        current: list[tuple[str, int]] = []
        size = 0
        for piece, n in pieces:
            if current and size + n > limit:
                chunks.append(self._join(current))
                # Carry the tail of this chunk into the next one, within the overlap budget.
                carried: list[tuple[str, int]] = []
                carried_size = 0
                for prev in reversed(current):
                    if carried_size + prev[1] > overlap or carried_size + prev[1] + n > limit:
                        break
                    carried.insert(0, prev)
                    carried_size += prev[1]
                current, size = carried, carried_size
            current.append((piece, n))
            size += n
        if current:
            chunks.append(self._join(current))
        return chunks

    def _join(self, pieces: list[tuple[str, int]]) -> TextChunk:
        text = " ".join(p for p, _ in pieces)
        return TextChunk(text, self.count([text])[0])

    def _split_long(self, sentence: str) -> list[tuple[str, int]]:
        encoding = self._tokenizer.encode(sentence, add_special_tokens=False)
        step = self.settings.max_tokens
        out = []
        for start in range(0, len(encoding.ids), step):
            offsets = encoding.offsets[start : start + step]
            piece = sentence[offsets[0][0] : offsets[-1][1]].strip()
            if piece:
                out.append((piece, len(offsets)))
        return out
