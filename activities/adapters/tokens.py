"""Count tokens the way the model will: its own tokenizer and chat template, never characters.

Two counters: the local one reads the vocabulary and chat template from the GGUF file the embedded
model server runs (exact, microseconds); the remote one asks the model server (TGI and llama.cpp's
``/tokenize``, llama-cpp-python's ``/extras/tokenize``) and adds the template's per-message cost.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from activities.logic.prompt import Message


class LocalGGUFCounter:
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

    def _n(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode(), add_bos=False, special=True))

    async def count(self, text: str) -> int:
        return self._n(text)

    async def count_chat(self, messages: list[Message]) -> int:
        return self._n(self._format(messages=messages).prompt)  # type: ignore[arg-type]


class RemoteCounter:
    # ChatML-style templates spend about this many tokens around each message.
    PER_MESSAGE = 5

    def __init__(self, http: httpx.AsyncClient, model_url: str) -> None:
        self.http = http
        self.model_url = model_url
        self._route: str | None = None

    async def count(self, text: str) -> int:
        if self._route in (None, "/tokenize"):
            resp = await self.http.post(f"{self.model_url}/tokenize", json={"inputs": text, "content": text})
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
        total = self.PER_MESSAGE  # the generation prompt
        for message in messages:
            total += await self.count(message["content"]) + self.PER_MESSAGE
        return total
