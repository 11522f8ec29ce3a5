"""Out-of-band moderation: check a persisted reply with the configured moderator
(activities/adapters/moderators.py); when it flags a category the tenant enforces, redact the reply
and tell connected clients, measuring how long and how many tokens it was visible before that.

A moderator with no verdict fails the step, which temporal.yaml retries; past its retries the
workflow runs the step once more with ``unavailable`` set, and the tenant's choice holds: fail open
(the reply stays, recorded as unmoderated) or fail closed (it is redacted). Every outcome is recorded
on the message (which moderator, its version, the categories)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.adapters.moderators import Moderator, ModeratorUnavailable
from activities.adapters.outages import REDIS_UNAVAILABLE, degraded
from activities.adapters.response_cache import ResponseCache
from activities.adapters.tenant_keys import tenant_of_workflow
from activities.adapters.turn_events import TurnEvents
from activities.contracts.turn import ModerationInput
from activities.logic.routing import TenantPolicy
from db.messages import record_moderation, redact_message
from db.models import AuditEvent
from infra.telemetry import metrics


def event_ms(event_id: str) -> int:
    """A Redis stream entry id's time (`<ms>-<seq>`): when the event was written."""
    return int(event_id.split("-")[0])


class ModerationActivities:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        moderator: Moderator,
        events: TurnEvents,
        cache: ResponseCache | None = None,
        *,
        policies: Callable[[str], Awaitable[TenantPolicy]],
        timeout_s: float = 10.0,
        on_failure: str = "open",
    ) -> None:
        # The tenants' policies as routing caches them: no query per reply.
        self.policies = policies
        self.sessions = sessions
        self.moderator = moderator
        self.events = events
        self.cache = cache
        self.timeout_s = timeout_s
        self.on_failure = on_failure

    @activity.defn(name="moderate_message")
    async def moderate_message(self, inp: ModerationInput) -> bool:
        """True when the message was redacted. Idempotent: redacting twice changes nothing more."""
        tenant = tenant_of_workflow(inp.turn_id)
        policy = await self.policies(str(tenant)) if tenant else TenantPolicy()
        if inp.unavailable:
            return await self._without_verdict(inp, policy)
        try:
            async with asyncio.timeout(self.timeout_s):
                verdict = await self.moderator.check(inp.text, inp.question)
        except (ModeratorUnavailable, TimeoutError) as exc:
            raise ApplicationError(f"{self.moderator.name}: {exc!r}", type="ModeratorUnavailable") from exc
        enforced = list(policy.moderation_categories)
        flagged = verdict.flagged and (not enforced or any(c in enforced for c in verdict.categories))
        record = {**verdict.record(), "flagged": flagged, **({"enforced": enforced} if enforced else {})}
        if not flagged:
            await self._keep(inp, record)
            return False
        reason = f"{verdict.version}: {', '.join(verdict.categories)}"
        await self._redact(inp, reason, record)
        return True

    async def _without_verdict(self, inp: ModerationInput, policy: TenantPolicy) -> bool:
        """The moderator gave none within its retries: the tenant's fail-open or fail-closed choice."""
        mode = policy.moderation_failure or self.on_failure
        record = {"moderator": self.moderator.name, "unavailable": True, "on_failure": mode}
        if mode == "closed":
            await self._redact(inp, f"{self.moderator.name}: no verdict (fail closed)", record)
            return True
        await self._keep(inp, record, unmoderated=True)
        return False

    async def _keep(self, inp: ModerationInput, record: dict[str, Any], *, unmoderated: bool = False) -> None:
        async with self.sessions.begin() as session:
            await record_moderation(session, inp.message_id, record)
        if inp.cache is not None and self.cache is not None and not unmoderated:
            # Clean: a repeat of the question may have this reply (activities/adapters/response_cache.py).
            try:
                judged = inp.cache.reply.model_copy(
                    update={"moderator": f"{record['moderator']} {record['version']}"}
                )
                await self.cache.put(inp.cache.tenant_id, inp.cache.key, judged)
            except REDIS_UNAVAILABLE as exc:
                degraded("a clean reply not cached", exc)
        data = {
            "message_id": inp.message_id,
            "flagged": False,
            **({"unmoderated": True} if unmoderated else {}),
        }
        await self.events.publish(inp.turn_id, "moderated", data)

    async def _redact(self, inp: ModerationInput, reason: str, record: dict[str, Any]) -> None:
        async with self.sessions.begin() as session:
            changed = await redact_message(session, inp.message_id, reason)
            await record_moderation(session, inp.message_id, record)
            if changed is not None:
                session.add(
                    AuditEvent(
                        tenant_id=changed,
                        actor="turnflow-moderation",
                        action="message.redact",
                        object_type="message",
                        object_id=inp.message_id,
                        details={"rule": reason, "moderator": record.get("moderator")},
                    )
                )
        if changed is None:
            return
        shown = await self._shown(inp.turn_id)
        redacted_at = await self.events.publish(
            inp.turn_id, "redact", {"message_id": inp.message_id, "reason": reason}
        )
        if shown is None:
            return
        first_ms, tokens = shown
        exposure = {"seconds": max(event_ms(redacted_at) - first_ms, 0) / 1000, "tokens": tokens}
        metrics.moderation_exposure.record(exposure["seconds"], {"moderator": str(record.get("moderator"))})
        metrics.moderation_exposure_tokens.record(tokens, {"moderator": str(record.get("moderator"))})
        async with self.sessions.begin() as session:
            await record_moderation(session, inp.message_id, {**record, "exposure": exposure})

    async def _shown(self, turn_id: str) -> tuple[int, int] | None:
        """When the reply's first token went to clients, and how many tokens they got (the last
        attempt's, after any `reset`); None with no tokens."""
        events = await self.events.read_all(turn_id)
        starts = [i for i, e in enumerate(events) if e.type in ("turn", "reset")]
        tokens = [e for e in events[starts[-1] if starts else 0 :] if e.type == "token"]
        if not tokens:
            return None
        return event_ms(tokens[0].id), len(tokens)
