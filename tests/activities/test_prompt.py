"""Prompt assembly under a token budget, counted with the model's real tokenizer and chat template."""

from __future__ import annotations

import httpx
import pytest

from activities.adapters.tokens import LocalGGUFCounter, RemoteCounter
from activities.contracts.turn import ContextChunk, Message
from activities.logic.prompt import PromptTooLong, assemble, compress, rank_sentences
from infra.config.endpoints import default_gguf
from tests.support.services import Services

SEA = (
    "The sea covers most of the planet. Lighthouses warn ships of rocks at night. "
    "Bread is baked in ovens. The Fresnel lens made lighthouse beams visible for miles. "
    "Cats sleep a lot."
)


@pytest.fixture(scope="module")
def counter() -> LocalGGUFCounter:
    return LocalGGUFCounter(default_gguf())


def chunk(n: int, text: str) -> ContextChunk:
    return ContextChunk(id=f"c{n}", document_id="d", document_version=1, text=text, score=1 - n / 10)


async def test_local_counter_agrees_with_the_model_server(
    counter: LocalGGUFCounter, services: Services
) -> None:
    async with httpx.AsyncClient() as http:
        remote = RemoteCounter(http, services.endpoints.model_url)
        for text in ["Hello there!", SEA, "naïve café — 東京"]:
            assert await counter.count(text) == await remote.count(text)


async def test_the_remote_counter_asks_once_per_text(services: Services) -> None:
    """Fitting a prompt counts it several times, and history comes back every turn: a text the
    model server has counted once is not sent again."""
    asked: list[str] = []

    async def record(request: httpx.Request) -> None:
        asked.append(request.url.path)

    async with httpx.AsyncClient(event_hooks={"request": [record]}) as http:
        remote = RemoteCounter(http, services.endpoints.model_url)
        chat: list[Message] = [
            {"role": "system", "content": SEA},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
        ]
        first = await remote.count_chat(chat)
        assert len(asked) >= 3  # each message once (a first call may also learn the server's route)
        before = len(asked)
        assert await remote.count_chat(chat) == first and len(asked) == before
        longer = await remote.count_chat([*chat, {"role": "user", "content": "And now?"}])
        assert longer > first and len(asked) == before + 1


async def test_chat_count_includes_the_template(counter: LocalGGUFCounter) -> None:
    content = await counter.count("hi")
    chat = await counter.count_chat([{"role": "user", "content": "hi"}])
    assert chat > content + 4  # role markers, end-of-turn tokens and the generation prompt


async def test_everything_fits_when_the_budget_allows(counter: LocalGGUFCounter) -> None:
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    prompt = await assemble("Tell me about lighthouses", history, [chunk(0, SEA)], 2000, counter)
    assert prompt.history_used == 2 and prompt.chunks_used == ["c0"] and not prompt.compressed
    assert SEA in prompt.messages[0]["content"]
    assert prompt.prompt_tokens == await counter.count_chat(prompt.messages) <= 2000


async def test_oldest_history_goes_first(counter: LocalGGUFCounter) -> None:
    history = [{"role": "user", "content": f"old message number {i} " * 8} for i in range(10)]
    prompt = await assemble("Newest question?", history, [], 200, counter)
    assert 0 < prompt.history_used < 10
    assert prompt.messages[-2] == history[-1]  # the most recent history is what stays
    assert prompt.prompt_tokens <= 200


async def test_context_is_compressed_to_the_sentences_closest_to_the_question(
    counter: LocalGGUFCounter,
) -> None:
    question = "How did the lighthouse lens help ships?"
    bare = (await assemble(question, [], [], 10_000, counter)).prompt_tokens
    whole = (await assemble(question, [], [chunk(0, SEA)], 10_000, counter)).prompt_tokens
    budget = bare + (whole - bare) // 2  # room for about half of the passage
    prompt = await assemble(question, [], [chunk(0, SEA)], budget, counter)
    assert prompt.compressed and prompt.chunks_used == ["c0"]
    system = prompt.messages[0]["content"]
    assert "Fresnel lens" in system and "Cats sleep" not in system and "Bread" not in system
    assert prompt.prompt_tokens <= budget


async def test_lowest_ranked_chunks_are_dropped_last_resort(counter: LocalGGUFCounter) -> None:
    chunks = [chunk(i, f"Lighthouse fact number {i}. " * 20) for i in range(4)]
    prompt = await assemble("lighthouse facts", [], chunks, 180, counter)
    assert prompt.chunks_used == [c.id for c in chunks[: len(prompt.chunks_used)]]
    assert prompt.prompt_tokens <= 180


async def test_a_message_that_cannot_fit_is_refused(counter: LocalGGUFCounter) -> None:
    with pytest.raises(PromptTooLong, match="budget is 50"):
        await assemble("word " * 200, [], [], 50, counter)


async def test_compress_keeps_original_order(counter: LocalGGUFCounter) -> None:
    ranked = rank_sentences(SEA, "lighthouse lens ships")
    assert "Fresnel" in ranked[0][1] or "Lighthouses" in ranked[0][1]
    short = await compress(SEA, "lighthouse lens ships rocks", 40, counter)
    assert short.index("Lighthouses") < short.index("Fresnel")


async def test_a_prompt_counted_again_is_remembered_not_rendered_again(counter: LocalGGUFCounter) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is a lens?"}]
    rendered = []
    fmt = counter._format
    counter._format = lambda **kw: rendered.append(1) or fmt(**kw)  # type: ignore[method-assign]
    first = await counter.count_chat(messages)
    assert await counter.count_chat([dict(m) for m in messages]) == first
    assert len(rendered) == 1
    longer = [*messages, {"role": "assistant", "content": "a curved glass"}]
    assert await counter.count_chat(longer) > first
    assert len(rendered) == 2
