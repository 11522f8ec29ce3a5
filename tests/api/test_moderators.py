"""Moderators out of band: an OpenAI-compatible /v1/moderations endpoint (a recording stand-in that
flags, clears or fails on purpose), a Llama Guard-style classifier through the model adapters (a
stand-in chat model that answers as Llama Guard does, and the real llama.cpp server prompted as one),
the tenant's enforced categories and its fail-open or fail-closed choice, each verdict recorded on
the message, and a redacted reply's exposure matching the stream's own event times."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from activities.adapters.moderators import ModeratorUnavailable, parse_guard_output
from infra.config.endpoints import default_gguf
from infra.config.moderation import LLAMA_GUARD_CATEGORIES
from tests.support.api_harness import REAL_MODEL, ApiServer, isolated_settings, model_entry, real_model_entry
from tests.support.fake_model import ScriptedModelServer
from tests.support.in_loop_server import InLoopServer
from tests.support.services import Services, db_rows, set_tenant_policy
from tests.support.sse import Event, collect

pytestmark = pytest.mark.timeout(300)


@dataclass
class Verdicts:
    """What the stand-in moderations endpoint answers: a status, and the categories it flags."""

    status: int = 200
    flags: list[str] = field(default_factory=list)


class RecordingModerations(InLoopServer):
    """An OpenAI-compatible `/v1/moderations` stand-in that records each request."""

    def __init__(self) -> None:
        self.verdicts = Verdicts()
        self.bodies: list[dict[str, Any]] = []
        super().__init__(Starlette(routes=[Route("/v1/moderations", self._moderate, methods=["POST"])]))

    async def _moderate(self, request: Request) -> Response:
        self.bodies.append(await request.json())
        if self.verdicts.status != 200:
            return JSONResponse(
                {"error": {"message": "failing on purpose"}}, status_code=self.verdicts.status
            )
        names = ("harassment", "self-harm", "violence")
        categories = {n: n in self.verdicts.flags for n in names}
        result = {"flagged": bool(self.verdicts.flags), "categories": categories}
        return JSONResponse({"id": "modr-1", "model": "omni-moderation-2024-09-26", "results": [result]})


async def turn(api: ApiServer, headers: dict[str, str] | None = None) -> list[Event]:
    conv = await api.conversation(headers)
    async with api.client.stream(
        "POST", f"/v1/conversations/{conv}/messages", json={"content": "Say hello."}, headers=headers
    ) as resp:
        assert resp.status_code == 200
        return await collect(resp)


def record_of(services: Services, message_id: str) -> tuple[dict[str, Any], bool, str | None]:
    ((record, redacted, reason),) = db_rows(
        services, "SELECT moderation, redacted, redaction_reason FROM messages WHERE id = %s", message_id
    )
    return record, redacted, reason


async def exposure_recorded(services: Services, message_id: str) -> tuple[dict[str, Any], bool, str | None]:
    """The record once its exposure is in it (written just after the `redact` event it is timed by)."""
    for _ in range(50):
        record, redacted, reason = record_of(services, message_id)
        if "exposure" in record:
            return record, redacted, reason
        await asyncio.sleep(0.1)
    raise AssertionError(f"no exposure recorded: {record}")


async def tenant_with(api: ApiServer, services: Services, **policy: object) -> dict[str, str]:
    name = f"moderated-{uuid.uuid4().hex[:8]}"
    headers = await api.headers_for(name)
    set_tenant_policy(services, name, **policy)
    return headers


def test_llama_guard_output_is_parsed_or_refused() -> None:
    codes = LLAMA_GUARD_CATEGORIES
    assert parse_guard_output("safe", codes) == (False, [])
    assert parse_guard_output("\nunsafe\nS1,S10\n", codes) == (True, ["S1", "S10"])
    assert parse_guard_output("unsafe", codes) == (True, ["unspecified"])
    assert parse_guard_output('{"verdict": "unsafe", "categories": ["S11"]}', codes) == (True, ["S11"])
    assert parse_guard_output('{"verdict": "safe", "categories": []}', codes) == (False, [])
    for garbage in ("I think this is fine.", "", '{"verdict": "maybe"}', "{not json"):
        with pytest.raises(ModeratorUnavailable):
            parse_guard_output(garbage, codes)


@pytest_asyncio.fixture
async def openai_moderated(
    services: Services, tmp_path: Path
) -> AsyncIterator[tuple[ApiServer, RecordingModerations]]:
    async with ScriptedModelServer("chat") as model, RecordingModerations() as moderations:
        moderation = {"moderator": "openai", "timeout": "2s", "openai": {"url": moderations.url}}
        settings = isolated_settings(
            services,
            tmp_path,
            models={"chat": model_entry(model.url)},
            moderation=moderation,
            model_path=default_gguf(),
        )
        async with ApiServer(settings) as api:
            yield api, moderations


async def test_the_moderations_endpoint_redacts_or_keeps_and_exposure_matches_the_events(
    openai_moderated: tuple[ApiServer, RecordingModerations], services: Services
) -> None:
    api, moderations = openai_moderated
    moderations.verdicts = Verdicts(flags=["harassment"])
    seen = await turn(api)
    assert [e.event for e in seen[-2:]] == ["done", "redact"]
    assert moderations.bodies[-1] == {"model": "omni-moderation-latest", "input": "Hello there."}
    record, redacted, reason = await exposure_recorded(services, seen[-1].data["message_id"])
    assert redacted and reason == "omni-moderation-2024-09-26: harassment"
    assert (record["moderator"], record["version"], record["categories"]) == (
        "openai",
        "omni-moderation-2024-09-26",
        ["harassment"],
    )
    # Shown from the first token's event to the redact event: the stream's own entry times (ms).
    tokens = [e for e in seen if e.event == "token"]
    shown_ms = int(seen[-1].id.split("-")[0]) - int(tokens[0].id.split("-")[0])
    assert record["exposure"] == {"seconds": shown_ms / 1000, "tokens": len(tokens)}

    moderations.verdicts = Verdicts()
    seen = await turn(api)
    assert seen[-1].event == "moderated" and seen[-1].data["flagged"] is False
    record, redacted, _ = record_of(services, seen[-1].data["message_id"])
    assert not redacted and record["moderator"] == "openai" and record["flagged"] is False

    # A tenant that enforces only some categories keeps a reply flagged for another.
    violence_only = await tenant_with(api, services, moderation_categories=["violence"])
    moderations.verdicts = Verdicts(flags=["harassment"])
    seen = await turn(api, violence_only)
    assert seen[-1].event == "moderated"
    record, redacted, _ = record_of(services, seen[-1].data["message_id"])
    assert not redacted and record["categories"] == ["harassment"] and record["enforced"] == ["violence"]

    # The operators' dashboard shows the redactions and their exposure.
    operator = await api.headers_for(f"ops-{uuid.uuid4().hex[:8]}", ("operator",))
    summary = (await api.client.get("/v1/dashboard/summary", headers=operator)).json()
    (row,) = [m for m in summary["moderation"] if m["moderator"] == "openai"]
    assert row["judged"] == 3 and row["redacted"] == 1 and row["without_verdict"] == 0
    assert row["exposure_s"]["p50"] == shown_ms / 1000 and row["exposure_tokens"]["p50"] == len(tokens)


async def test_a_moderator_with_no_verdict_fails_open_or_closed_as_the_tenant_chose(
    openai_moderated: tuple[ApiServer, RecordingModerations], services: Services
) -> None:
    api, moderations = openai_moderated
    moderations.verdicts = Verdicts(status=503)
    asked = len(moderations.bodies)
    seen = await turn(api)  # the deployment's default: open
    assert seen[-1].event == "moderated" and seen[-1].data == {
        "message_id": seen[-2].data["message_id"],
        "flagged": False,
        "unmoderated": True,
    }
    assert len(moderations.bodies) - asked == 4  # moderate_message's attempts in temporal.yaml
    record, redacted, _ = record_of(services, seen[-1].data["message_id"])
    assert not redacted and record == {"moderator": "openai", "unavailable": True, "on_failure": "open"}

    closed = await tenant_with(api, services, moderation_failure="closed")
    seen = await turn(api, closed)
    assert seen[-1].event == "redact"
    record, redacted, reason = record_of(services, seen[-1].data["message_id"])
    assert redacted and reason == "openai: no verdict (fail closed)" and record["on_failure"] == "closed"


async def test_a_llama_guard_classifier_through_the_model_adapters(
    services: Services, tmp_path: Path
) -> None:
    async with ScriptedModelServer("chat") as chat, ScriptedModelServer("guard") as guard:
        guard.script.reply = ["unsafe", "\n", "S11"]
        models = {"chat": model_entry(chat.url, fidelity=5), "guard": model_entry(guard.url, fidelity=0)}
        moderation = {"moderator": "llama_guard", "llama_guard": {"model": "guard"}}
        settings = isolated_settings(
            services, tmp_path, models=models, moderation=moderation, model_path=default_gguf()
        )
        async with ApiServer(settings) as api:
            seen = await turn(api)
            assert seen[-1].event == "redact"
            # The classifier got the Llama Guard prompt: the categories, the question and the reply.
            prompt = guard.bodies[-1]["messages"][0]["content"]  # type: ignore[index]
            assert "S11: Suicide & Self-Harm." in prompt and "User: Say hello." in prompt
            assert "Agent: Hello there." in prompt
            record, redacted, _ = record_of(services, seen[-1].data["message_id"])
            assert redacted and record["moderator"] == "llama_guard" and record["categories"] == ["S11"]
            assert record["version"] == "guard@1/guard-v1"
            guard.script.reply = ["safe"]
            seen = await turn(api)
            assert seen[-1].event == "moderated"


async def test_the_real_model_server_prompted_as_a_classifier(services: Services, tmp_path: Path) -> None:
    # SmolLM2 is no classifier; constrained to the verdict's JSON schema, its verdict still parses,
    # and whichever it is, the reply is redacted or kept accordingly and the verdict recorded.
    moderation = {"moderator": "llama_guard", "llama_guard": {"model": REAL_MODEL, "constrained": True}}
    settings = isolated_settings(
        services, tmp_path, models={REAL_MODEL: real_model_entry()}, moderation=moderation
    )
    async with ApiServer(settings) as api:
        seen = await turn(api)
    record, redacted, _ = record_of(services, seen[-1].data["message_id"])
    assert record["moderator"] == "llama_guard" and record["version"].startswith(f"{REAL_MODEL}@")
    assert (
        seen[-1].event == ("redact" if record["flagged"] else "moderated") and redacted is record["flagged"]
    )
    assert set(record["categories"]) <= {*LLAMA_GUARD_CATEGORIES, "unspecified"}
