"""`turnflow synth`: synthetic conversational traffic against a running stack, then its SLO report.

Conversations of 2-4 turns arrive as a Poisson process at ``rate`` turns per second; each asks about a
small corpus it ingests first (so turns retrieve), with prompts from a few words to a paragraph. Every
turn streams over SSE like a real client, and the client-side TTFT and latency are measured.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from infra.eval.sse_client import events

CORPUS = {
    "returns.md": "Orders from the Lumen store can be returned within 30 days. Refunds go back to the "
    "original card within five business days. Opened headphones are exchanged, not refunded.",
    "shipping.md": "Lumen ships from Rotterdam. Standard delivery takes three to five days in the EU; "
    "express delivery the next day when ordered before 14:00. Parcels over 20 kg ship by freight.",
    "warranty.md": "Every Lumen lamp has a two-year warranty covering the driver and the LEDs. Damage from "
    "water or a dropped lamp is not covered. Claims need the order number and a photo.",
    "accounts.md": "A Lumen account keeps your orders and addresses. Passwords are reset from the sign-in "
    "page; two-factor codes come by app or SMS. Closing an account deletes its data after 30 days.",
    "lamps.md": "The Lumen Arc is a 12 W floor lamp with a dimmer and warm light at 2700 K. The Lumen Dot "
    "is a battery desk lamp that lasts 40 hours on a charge and charges over USB-C in three hours.",
}
QUESTIONS = [
    "How long do I have to return an order?",
    "When will my refund arrive?",
    "How fast is express delivery?",
    "Does the warranty cover water damage?",
    "How do I reset my password?",
    "How long does the Lumen Dot battery last?",
    "What colour temperature is the Lumen Arc?",
    "Where do you ship from?",
]
FOLLOW_UPS = ["And what about express?", "Can you say that more briefly?", "Is there any exception?"]
CONTEXT = (
    "I bought a lamp from you last month for my study, and I have been comparing it with a few others "
    "from different shops because I want to furnish the whole flat in the same style before winter. "
)


def prompt(rng: random.Random, turn: int) -> str:
    """Realistic lengths: most prompts a sentence, some a short paragraph with context."""
    if turn > 0 and rng.random() < 0.6:
        return rng.choice(FOLLOW_UPS)
    question = rng.choice(QUESTIONS)
    if rng.random() < 0.3:
        return CONTEXT * rng.randint(1, 2) + question
    return question


@dataclass
class Tally:
    started: int = 0
    completed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    ttft_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    # Turns answered without context: retrieval failed or missed its deadline (the turn's events say).
    degraded: int = 0


class Synth:
    def __init__(
        self,
        api: str,
        key: str,
        *,
        max_tokens: int,
        max_in_flight: int,
        seed: int,
        think_s: float = 0.0,
        questions: list[str] | None = None,
    ) -> None:
        self.http = httpx.AsyncClient(
            base_url=api,
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(300, connect=10),
            # A connection per conversation: the client must not queue what it measures.
            limits=httpx.Limits(
                max_connections=max_in_flight + 4, max_keepalive_connections=max_in_flight + 4
            ),
        )
        self.max_tokens = max_tokens
        # A user's mean pause (exponential) before each turn: reading the reply, typing the next.
        self.think_s = think_s
        self.slots = asyncio.Semaphore(max_in_flight)
        self.rng = random.Random(seed)
        self.tally = Tally()
        # Asked in turn instead of the built-in prompts (e.g. a data set's queries, for its corpus).
        self.questions = questions
        self._asked = 0

    async def aclose(self) -> None:
        await self.http.aclose()

    async def ingest_corpus(self) -> None:
        """Idempotent: the same bytes again change nothing."""
        for source, text in CORPUS.items():
            resp = await self.http.post("/v1/documents", json={"source": f"synth/{source}", "text": text})
            if resp.status_code not in (200, 201, 202):
                raise RuntimeError(f"ingesting {source}: {resp.status_code} {resp.text[:200]}")

    async def turn(self, conversation: str, text: str) -> None:
        self.tally.started += 1
        started = time.perf_counter()
        first: float | None = None
        outcome = "incomplete"
        degraded = False
        try:
            async with self.http.stream(
                "POST",
                f"/v1/conversations/{conversation}/messages",
                json={"content": text, "max_tokens": self.max_tokens},
            ) as resp:
                if resp.status_code != 200:
                    outcome = f"http_{resp.status_code}"
                else:
                    async for event in events(resp):
                        if event.event == "token" and first is None:
                            first = time.perf_counter()
                        elif event.event in ("turn", "reset"):
                            degraded = degraded or bool(event.data.get("degraded"))
                        elif event.event in ("done", "error"):
                            outcome = "ok" if event.event == "done" else str(event.data.get("code", "error"))
                            break
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
        self.tally.degraded += degraded
        if outcome == "ok":
            self.tally.completed += 1
            self.tally.total_ms.append((time.perf_counter() - started) * 1000)
            if first is not None:
                self.tally.ttft_ms.append((first - started) * 1000)
        else:
            self.tally.errors[outcome] += 1

    async def conversation(self) -> None:
        async with self.slots:
            try:
                resp = await self.http.post("/v1/conversations", json={"title": "synthetic"})
            except httpx.HTTPError as exc:
                self.tally.errors[type(exc).__name__] += 1
                return
            if resp.status_code != 201:
                self.tally.errors[f"http_{resp.status_code}"] += 1
                return
            conversation = resp.json()["id"]
            for n in range(self.rng.randint(2, 4)):
                if self.think_s:
                    await asyncio.sleep(self.rng.expovariate(1 / self.think_s))
                await self.turn(conversation, self._next_prompt(n))

    def _next_prompt(self, turn: int) -> str:
        if not self.questions:
            return prompt(self.rng, turn)
        self._asked += 1
        return self.questions[(self._asked - 1) % len(self.questions)]

    async def run(self, rate: float, duration_s: float, progress: Any = None) -> Tally:
        """Conversations start at ``rate / 3`` per second (about 3 turns each), until ``duration_s``;
        then the ones under way finish."""
        deadline = time.monotonic() + duration_s
        running: set[asyncio.Task[None]] = set()
        while time.monotonic() < deadline:
            task = asyncio.create_task(self.conversation())
            running.add(task)
            task.add_done_callback(running.discard)
            await asyncio.sleep(min(self.rng.expovariate(rate / 3), max(deadline - time.monotonic(), 0)))
            if progress:
                progress(self.tally, len(running))
        if running:
            await asyncio.gather(*running)
        return self.tally

    async def slo(self, window_s: float) -> dict[str, Any]:
        minutes = max(1, int(-(-window_s // 60)))
        resp = await self.http.get("/v1/slo", params={"window": f"{minutes}m"})
        resp.raise_for_status()
        return dict(resp.json())
