"""Count tokens the way the model will: its own tokenizer and chat template, never characters.

Two counters: the local one reads the vocabulary and chat template from the GGUF file the embedded
model server runs (exact, microseconds); the remote one asks the model server (TGI's, vLLM's and llama.cpp's
``/tokenize``, llama-cpp-python's ``/extras/tokenize``) and adds the template's per-message cost.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from pathlib import Path

import httpx

from activities.logic.prompt import Message


class LocalGGUFCounter:
    """Exact counts. Fitting a prompt to its budget counts the same prompt several times (before
    and after each trim, then once more for the record), and rendering the chat template costs more
    than tokenizing; so the last prompts' counts are remembered."""

    KEEP = 1024  # prompts remembered (their texts are the key: a few MB at most)

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
        key = tuple((m["role"], m["content"]) for m in messages)
        if (n := self._known.get(key)) is not None:
            self._known.move_to_end(key)
            return n
        n = self._n(self._format(messages=messages).prompt)  # type: ignore[arg-type]
        self._known[key] = n
        if len(self._known) > self.KEEP:
            self._known.popitem(last=False)
        return n


class RemoteCounter:
    """Counts by asking the model server, remembering what it answered: a prompt is counted several
    times while it is fitted to its budget, and a conversation's history comes back every turn, so
    most texts are known already; the others are asked for side by side (one round trip, not one
    per message)."""

    # ChatML-style templates spend about this many tokens around each message.
    PER_MESSAGE = 5
    KEEP = 4096  # texts remembered (a few MB at most)

    def __init__(self, http: httpx.AsyncClient, model_url: str) -> None:
        self.http = http
        self.model_url = model_url
        self._route: str | None = None
        self._known: OrderedDict[str, int] = OrderedDict()

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
        resp.raise_for_status()
        self._route = "/extras/tokenize"
        return len(resp.json()["tokens"])

    async def count_chat(self, messages: list[Message]) -> int:
        counts = await asyncio.gather(*(self.count(m["content"]) for m in messages))
        return self.PER_MESSAGE + sum(n + self.PER_MESSAGE for n in counts)  # + the generation prompt
