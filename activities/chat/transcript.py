"""The transcript: the turn's history for the prompt, and the idempotent persist step."""

from __future__ import annotations

import json
import uuid
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.adapters.admission import TurnAdmission
from activities.adapters.context_cache import ContextCache
from activities.adapters.rate_limits import RateLimiter
from activities.adapters.sealed_text import seal_tool_calls
from activities.adapters.turn_events import TurnEvents
from activities.adapters.turn_metrics import record_turn
from activities.contracts.turn import Message, PersistInput, PersistResult
from activities.logic.attachments import image_reference
from activities.logic.extractive import NOTE
from db.messages import insert_exchange, tenant_name


def _rows(inp: PersistInput) -> list[dict[str, Any]]:
    """The question, a tool exchange if the request carried one, and the reply, as message rows (each
    row's content still to seal); the reply carries the turn's provenance."""
    common = {
        "tenant_id": uuid.UUID(inp.tenant_id),
        "conversation_id": uuid.UUID(inp.conversation_id),
        "turn_id": inp.turn_id,
        "request_id": inp.request_id,
        "interactive": inp.interactive,
    }
    provenance = {
        "model_id": inp.model_id,
        "model_version": inp.model_version,
        "prompt_template_version": inp.prompt_template_version,
        "retrieved_chunks": inp.retrieved_chunks,
        "input_tokens": inp.input_tokens,
        "output_tokens": inp.output_tokens,
        "ttft_ms": inp.ttft_ms,
        "latency_ms": inp.latency_ms,
        "finish_reason": inp.finish_reason,
        "route": inp.route,
        "cost_usd": inp.cost_usd,
        "error": inp.error,
    }
    user = {
        **common,
        "role": "user",
        "content": inp.user_text,
        "pii_redacted": inp.pii_redacted,
        "attachments": [image_reference(p["image_url"]["url"]) for p in inp.images or []] or None,
    }
    reply = {
        **common,
        **provenance,
        "role": "assistant",
        "content": inp.assistant_text,
        "pii_redacted": False,
        "tool_calls": [c.as_openai() for c in inp.tool_calls] or None,
    }
    if not inp.tool_exchange:
        return [user, reply]
    # One `tool` row: the results (as the prompt had them) and the calls they answer.
    results = [
        {"tool_call_id": m.get("tool_call_id"), "content": m.get("content")}
        for m in inp.tool_exchange
        if m.get("role") == "tool"
    ]
    answered = [c for m in inp.tool_exchange for c in m.get("tool_calls") or []]
    tool = {
        **common,
        "role": "tool",
        "content": json.dumps(results),
        "pii_redacted": inp.pii_redacted,
        "tool_calls": answered or None,
    }
    return [user, tool, reply]


def _terminal_event(inp: PersistInput, result: PersistResult) -> tuple[str, dict[str, Any]]:
    """What the client's stream ends with: ``error`` or ``done`` with the turn's figures."""
    if inp.status == "error":
        return "error", {**(inp.error or {}), "message_id": result.assistant_message_id}
    return "done", {
        "message_id": result.assistant_message_id,
        "finish_reason": inp.finish_reason,
        "usage": {"input_tokens": inp.input_tokens, "output_tokens": inp.output_tokens},
        "ttft_ms": inp.ttft_ms,
        "latency_ms": inp.latency_ms,
        "model": inp.model_id,
        "model_version": inp.model_version,
        "route": (inp.route or {}).get("rule"),
        "cost_usd": f"{inp.cost_usd:f}" if inp.cost_usd is not None else None,
        # True when retrieval missed its deadline; "extractive" when answered from the sources.
        "degraded": inp.degraded_mode or inp.degraded,
        **({"note": NOTE} if inp.degraded_mode == "extractive" else {}),
        # A cached reply's verdict was the turn's it came from: carried over, none to wait for.
        "moderation": "pending" if inp.moderation_pending else "carried" if inp.cached_from else "none",
        **(
            {"cached": {"turn_id": inp.cached_from.turn_id, "message_id": inp.cached_from.message_id}}
            if inp.cached_from
            else {}
        ),
        **({"tool_calls": [c.as_openai() for c in inp.tool_calls]} if inp.tool_calls else {}),
    }


class Transcript:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        redis: Redis,
        events: TurnEvents,
        rate_limits: RateLimiter | None = None,
        admission: TurnAdmission | None = None,
        tenant_label: str = "name",
    ) -> None:
        self.sessions = sessions
        self.sealer = events.sealer
        self.context = ContextCache(sessions, redis, events.sealer)
        self.events = events
        self.rate_limits = rate_limits
        self.admission = admission
        # Metrics label a tenant by name (names never change), or by its opaque id where the metrics'
        # readers should not learn the customer list (TURNFLOW_METRICS_TENANT_LABEL=id).
        self.tenant_label = tenant_label
        self._tenant_names: dict[str, str] = {}

    async def recent(self, tenant_id: str, conversation_id: str) -> list[Message]:
        return await self.context.recent(tenant_id, conversation_id)

    @activity.defn(name="persist_turn")
    async def persist_turn(self, inp: PersistInput) -> PersistResult:
        """Both messages in one transaction; a retry finds them and adds nothing.

        Past the commit, Redis must be reached (context cache, limits, the turn's place, its terminal
        event): while it is down this step fails and is retried, and each part is idempotent, so the
        retry completes what the first attempt could not."""
        result = await self._record(inp)
        if inp.status == "completed" and inp.assistant_text:
            exchange = [
                {"role": "user", "content": inp.user_text},
                {"role": "assistant", "content": inp.assistant_text},
            ]
            await self.context.remember(inp.tenant_id, inp.conversation_id, exchange, turn_id=inp.turn_id)
        await self._release(inp)
        await self.events.publish(inp.turn_id, *_terminal_event(inp, result))
        return result

    async def _record(self, inp: PersistInput) -> PersistResult:
        """The exchange in Postgres, counted in the metrics the first time only."""
        rows = _rows(inp)
        # Sealed with the tenant's key: Postgres (and its backups) hold no readable transcript.
        sealed = await self.sealer.seal_all(inp.tenant_id, [row["content"] for row in rows])
        for row, content in zip(rows, sealed, strict=True):
            row["content"] = content
            if row.get("tool_calls"):  # arguments are the model's words: sealed like the content
                row["tool_calls"] = await seal_tool_calls(self.sealer, inp.tenant_id, row["tool_calls"])
            for attachment in row.get("attachments") or []:
                if "url" in attachment:  # a link may carry a signature: sealed too
                    attachment["url"] = await self.sealer.seal(inp.tenant_id, attachment["url"])
        async with self.sessions.begin() as session:
            ids, inserted = await insert_exchange(session, *rows)
            if inserted and inp.tenant_id not in self._tenant_names:
                name = (
                    await tenant_name(session, uuid.UUID(inp.tenant_id))
                    if self.tenant_label == "name"
                    else None
                )
                self._tenant_names[inp.tenant_id] = name or inp.tenant_id
        if inserted:
            record_turn(inp, self._tenant_names[inp.tenant_id])
        return PersistResult(user_message_id=str(ids["user"]), assistant_message_id=str(ids["assistant"]))

    async def _release(self, inp: PersistInput) -> None:
        """The tenant's tokens per window (once per turn, however often this step is retried), and the
        turn's place among those in flight, freed however it ended: room for the next."""
        if self.rate_limits is not None:
            used = (inp.input_tokens or 0) + (inp.output_tokens or 0)
            await self.rate_limits.tokens_used(inp.tenant_id, inp.turn_id, used)
        if self.admission is not None:
            await self.admission.release(inp.turn_id)
