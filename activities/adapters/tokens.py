"""Count tokens the way the model will: its own tokenizer and chat template, never characters.

Counters: the local one reads the vocabulary and chat template from a GGUF file (the embedded model
server's, or one declared; exact, microseconds); the tokenizer.json one uses a Hugging Face tokenizer
file; the remote one asks the model server (TGI's, vLLM's and llama.cpp's ``/tokenize``,
llama-cpp-python's ``/extras/tokenize``) and adds the template's per-message cost. Where none of
those exists (OpenAI itself, Ollama, LM Studio, another gateway), a stated conservative estimate
counts instead, and says so (``estimated``): a turn is never failed for want of a tokenizer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections import OrderedDict
from pathlib import Path

import httpx

from activities.contracts.turn import Message

log = logging.getLogger(__name__)
# ChatML-style templates spend about this many tokens around each message.
PER_MESSAGE = 5
# The estimate, by kind of text, set from the byte-level BPE tokenizers most open models use (SmolLM2,
# Llama 3, Qwen): a run of lowercase letters costs a token per 3 letters, of capitals one per 2;
# each digit and each ASCII symbol one; whitespace one per 2 characters (a single space before a
# word is free: it joins the word); any other character one per UTF-8 byte. On turnflow's own docs,
# code and temporal.yaml (4,000 passages) it counts 1.75 times what SmolLM2's tokenizer does and
# never fewer; text in mixed-case random strings (base64, hashes) may count a quarter more than it.
_PIECES = re.compile(
    r"(?P<digit>\d)|(?P<capitals>[A-Z]{2,})|(?P<word>[A-Za-z][a-z]*)|(?P<joined> (?=[A-Za-z]))"
    r"|(?P<space>\s+)|(?P<symbol>[\x21-\x7e])|(?P<other>.)",
    re.DOTALL,
)


def estimate_tokens(text: str) -> int:
    n = 0
    for piece in _PIECES.finditer(text):
        kind, found = piece.lastgroup, piece.group()
        if kind == "word":
            n += math.ceil(len(found) / 3)
        elif kind == "capitals" or kind == "space":
            n += math.ceil(len(found) / 2)
        elif kind == "other":
            n += len(found.encode())
        elif kind != "joined":
            n += 1
    return n


# An image in a vision model's prompt, stated conservatively (OpenAI counts up to 1,105 tokens for a
# 1024-pixel image in high detail; vision models served by vLLM vary): no text tokenizer counts it.
IMAGE_TOKENS = 1_105


def message_text(message: Message) -> str:
    """What of a message the model reads as text besides the template's framing: its content (its
    text parts), and in a tool exchange the calls (names and arguments) or the id a result answers."""
    content = message.get("content") or ""
    text = content if isinstance(content, str) else "\n".join(p.get("text") or "" for p in content)
    if calls := message.get("tool_calls"):
        text += json.dumps(calls, separators=(",", ":"))
    if call_id := message.get("tool_call_id"):
        text += f" {call_id}"
    return str(text)


def with_text_content(message: Message) -> Message:
    """The message with text content, for chat templates that know no tool calls: the calls, or
    nothing, where the content is null."""
    if message.get("content") is not None:
        return message
    calls = message.get("tool_calls")
    return {**message, "content": json.dumps(calls, separators=(",", ":")) if calls else ""}


def images_cost(messages: list[Message]) -> int:
    parts = [p for m in messages if isinstance(m.get("content"), list) for p in m["content"]]
    return IMAGE_TOKENS * sum(1 for p in parts if p.get("type") == "image_url")


class EstimatedCounter:
    """No tokenizer: the conservative estimate, plus the template's per-message cost."""

    estimated = True

    async def count(self, text: str) -> int:
        return estimate_tokens(text)

    async def count_chat(self, messages: list[Message]) -> int:
        texts = sum(estimate_tokens(message_text(m)) + PER_MESSAGE for m in messages)
        return PER_MESSAGE + texts + images_cost(messages)


class TokenizerJsonCounter:
    """A Hugging Face `tokenizer.json` (the model's own vocabulary); the template's cost per message
    is ChatML's, as the remote counter's."""

    estimated = False

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(path))
        # A file made for a fixed-length encoder pads and truncates: a count needs neither.
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()

    async def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    async def count_chat(self, messages: list[Message]) -> int:
        counts = [await self.count(message_text(m)) for m in messages]
        return PER_MESSAGE + sum(n + PER_MESSAGE for n in counts) + images_cost(messages)


class LocalGGUFCounter:
    """Exact counts. Fitting a prompt to its budget counts the same prompt several times (before
    and after each trim, then once more for the record), and rendering the chat template costs more
    than tokenizing; so the last prompts' counts are remembered."""

    KEEP = 1024  # prompts remembered (their texts are the key: a few MB at most)
    estimated = False

    def __init__(self, gguf: Path) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._llama = Llama(model_path=str(gguf), vocab_only=True, verbose=False)
        template = self._llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError(f"{gguf} carries no chat template")
        token = self._llama.detokenize
        self._format = Jinja2ChatFormatter(
            template,
            eos_token=token([self._llama.token_eos()]).decode(errors="ignore"),
            bos_token=token([self._llama.token_bos()]).decode(errors="ignore"),
            add_generation_prompt=True,
        )
        self._known: OrderedDict[tuple[tuple[str, str], ...], int] = OrderedDict()

    def _n(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode(), add_bos=False, special=True))

    async def count(self, text: str) -> int:
        return self._n(text)

    async def count_chat(self, messages: list[Message]) -> int:
        key = tuple((m["role"], message_text(m)) for m in messages)
        if (n := self._known.get(key)) is None:
            texts = [{"role": role, "content": text} for role, text in key]
            n = self._n(self._format(messages=texts).prompt)  # type: ignore[arg-type]
            self._known[key] = n
            if len(self._known) > self.KEEP:
                self._known.popitem(last=False)
        else:
            self._known.move_to_end(key)
        return n + images_cost(messages)


class RemoteCounter:
    """Counts by asking the model server, remembering what it answered: a prompt is counted several
    times while it is fitted to its budget, and a conversation's history comes back every turn, so
    most texts are known already; the others are asked for side by side (one round trip, not one
    per message)."""

    KEEP = 4096  # texts remembered (a few MB at most)
    # What a server without either tokenize route answers (then the estimate counts, for good).
    NO_ROUTE = (404, 405, 501)

    def __init__(self, http: httpx.AsyncClient, model_url: str) -> None:
        self.http = http
        self.model_url = model_url
        self._route: str | None = None
        self._known: OrderedDict[str, int] = OrderedDict()

    @property
    def estimated(self) -> bool:
        return self._route == "estimate"

    async def count(self, text: str) -> int:
        if (n := self._known.get(text)) is not None:
            self._known.move_to_end(text)
            return n
        n = await self._ask(text)
        self._known[text] = n
        if len(self._known) > self.KEEP:
            self._known.popitem(last=False)
        return n

    async def _ask(self, text: str) -> int:
        if self._route == "estimate":
            return estimate_tokens(text)
        if self._route in (None, "/tokenize"):
            # TGI reads `inputs`, llama.cpp `content`, vLLM `prompt`; each ignores the others.
            request = {"inputs": text, "content": text, "prompt": text}
            resp = await self.http.post(f"{self.model_url}/tokenize", json=request)
            if resp.status_code == 200:
                self._route = "/tokenize"
                body = resp.json()
                return len(body["tokens"] if isinstance(body, dict) else body)
            if self._route:
                resp.raise_for_status()
        resp = await self.http.post(f"{self.model_url}/extras/tokenize", json={"input": text})
        if resp.status_code in self.NO_ROUTE and self._route is None:
            log.warning(
                "%s has no tokenize route: its prompts are estimated (activities/adapters/tokens.py)",
                self.model_url,
            )
            self._route = "estimate"
            return estimate_tokens(text)
        resp.raise_for_status()
        self._route = "/extras/tokenize"
        return len(resp.json()["tokens"])

    async def count_chat(self, messages: list[Message]) -> int:
        counts = await asyncio.gather(*(self.count(message_text(m)) for m in messages))
        # + the generation prompt
        return PER_MESSAGE + sum(n + PER_MESSAGE for n in counts) + images_cost(messages)
