"""Assemble the prompt from a versioned template, recent turns and retrieved context, within a token budget.

What gives way when the budget is tight, in order: the oldest history; then the retrieved chunks are
compressed extractively (the sentences closest to the question stay, in their original order); then
the lowest-ranked chunks are dropped. The user's message itself is never cut.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from activities.contracts.turn import ContextChunk, Message
from infra.config.prompts import DEFAULT_SYSTEM_PROMPT

CONTEXT_HEADER = "Context passages:"

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


class TokenCounter(Protocol):
    @property
    def estimated(self) -> bool:
        """Counts are the stated estimate, not the model's tokenizer (activities/adapters/tokens.py)."""
        ...

    async def count(self, text: str) -> int: ...

    async def count_chat(self, messages: list[Message]) -> int:
        """Tokens of the whole prompt the server will build, generation prompt included."""
        ...


_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    (
        "a an and are as at be by for from has have how in is it its of on or that the this to was "
        "what when where which who why with you your"
    ).split()
)


@dataclass(frozen=True)
class AssembledPrompt:
    messages: list[Message]
    prompt_tokens: int
    history_used: int
    chunks_used: list[str]
    compressed: bool


class PromptTooLong(ValueError):
    pass


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def sentence_scores(text: str, query: str) -> list[tuple[float, int, str]]:
    """Each sentence's closeness to the query (word overlap, normalised by length), with its position."""
    query_words = _words(query)
    sentences = [s for s in _SENTENCE.split(text.strip()) if s]
    return [
        (len(_words(s) & query_words) / (1 + len(_words(s))) ** 0.5, i, s) for i, s in enumerate(sentences)
    ]


def rank_sentences(text: str, query: str) -> list[tuple[int, str]]:
    """Sentences with their position, most query-like first (ties by position)."""
    scored = sorted(sentence_scores(text, query), key=lambda t: (-t[0], t[1]))
    return [(i, s) for _, i, s in scored]


async def compress(text: str, query: str, budget: int, counter: TokenCounter) -> str:
    """Keep the sentences closest to the query that fit in ``budget`` tokens, in their original order."""
    kept: list[tuple[int, str]] = []
    used = 0
    for position, sentence in rank_sentences(text, query):
        cost = await counter.count(sentence + " ")
        if used + cost <= budget:
            kept.append((position, sentence))
            used += cost
    return " ".join(s for _, s in sorted(kept))


def _system(system: str, chunks: list[tuple[ContextChunk, str]]) -> Message:
    if not chunks:
        return {"role": "system", "content": system}
    passages = "\n".join(f"[{n}] {text}" for n, (_, text) in enumerate(chunks, 1))
    return {"role": "system", "content": f"{system}\n\n{CONTEXT_HEADER}\n{passages}"}


async def assemble(
    user_text: str,
    history: list[Message],
    chunks: list[ContextChunk],
    budget: int,
    counter: TokenCounter,
    *,
    system: str = DEFAULT_SYSTEM_PROMPT,
    images: list[Message] | None = None,
    tool_exchange: list[Message] | None = None,
) -> AssembledPrompt:
    """Fit the prompt into ``budget`` tokens (counted on the rendered chat template), under the
    template's ``system`` prompt (temporal.yaml `prompts:`). A ``tool_exchange`` (the model's tool
    calls and the client's results, after the user's message) is never cut, like the message and its
    ``images`` (OpenAI image parts, after its text)."""
    content = [{"type": "text", "text": user_text}, *images] if images else user_text
    turn: list[Message] = [{"role": "user", "content": content}, *(tool_exchange or [])]

    async def size(ctx: list[tuple[ContextChunk, str]], hist: list[Message]) -> int:
        return await counter.count_chat([_system(system, ctx), *hist, *turn])

    context = [(c, c.text) for c in chunks]
    bare = await size([], [])
    if bare > budget:
        raise PromptTooLong(f"the message alone needs {bare} tokens; the prompt budget is {budget}")

    # History goes oldest first, but only as far as needed to leave room for context.
    hist = list(history)
    while hist and await size(context, hist) > budget:
        hist.pop(0)

    compressed = False
    if await size(context, hist) > budget:
        # Share the room left (after the passages' framing) among the chunks, and compress each to
        # its share; joined sentences can tokenize a little longer, so shrink the share until it fits.
        room = budget - await size([(c, "") for c, _ in context], hist)
        share = max(room // max(len(context), 1), 0)
        squeezed = context
        for _ in range(4):
            squeezed = []
            for chunk, text in context:
                if short := await compress(text, user_text, share, counter):
                    squeezed.append((chunk, short))
            if await size(squeezed, hist) <= budget:
                break
            share = int(share * 0.8)
        compressed = True
        context = squeezed
        while context and await size(context, hist) > budget:
            context.pop()  # the lowest-ranked chunk goes first

    messages = [_system(system, context), *hist, *turn]
    return AssembledPrompt(
        messages=messages,
        prompt_tokens=await counter.count_chat(messages),
        history_used=len(hist),
        chunks_used=[c.id for c, _ in context],
        compressed=compressed,
    )
