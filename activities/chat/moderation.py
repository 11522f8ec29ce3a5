"""Out-of-band moderation: check a persisted reply; when it flags, redact it and tell connected clients."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.adapters.turn_events import TurnEvents
from activities.contracts.turn import ModerationInput
from activities.logic.safety import SafetyEngine
from db.messages import redact_message
from db.models import AuditEvent


class ModerationActivities:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], safety: SafetyEngine, events: TurnEvents
    ) -> None:
        self.sessions = sessions
        self.safety = safety
        self.events = events

    @activity.defn(name="moderate_message")
    async def moderate_message(self, inp: ModerationInput) -> bool:
        """True when the message was redacted. Idempotent: redacting twice changes nothing more."""
        verdict = self.safety.moderate(inp.text)
        if verdict.allowed:
            await self.events.publish(
                inp.turn_id, "moderated", {"message_id": inp.message_id, "flagged": False}
            )
            return False
        reason = f"{self.safety.version}: {verdict.rule}"
        async with self.sessions.begin() as session:
            changed = await redact_message(session, inp.message_id, reason)
            if changed is not None:
                session.add(
                    AuditEvent(
                        tenant_id=changed,
                        actor="turnflow-moderation",
                        action="message.redact",
                        object_type="message",
                        object_id=inp.message_id,
                        details={"rule": reason},
                    )
                )
        if changed is not None:
            await self.events.publish(inp.turn_id, "redact", {"message_id": inp.message_id, "reason": reason})
        return True
