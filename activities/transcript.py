"""The transcript: recent context (Redis, falling back to Postgres) and the idempotent persist step."""

from __future__ import annotations

import json
import uuid

from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.admission import TurnAdmission
from activities.outages import REDIS_UNAVAILABLE, degraded
from activities.rate_limits import RateLimiter
from activities.turn_events import TurnEvents
from activities.turn_metrics import record_turn
from activities.turn_models import Message, PersistInput, PersistResult
from db.models import Message as MessageRow
from db.models import Tenant

RECENT_MESSAGES = 20
RECENT_TTL_S = 24 * 3600


# KEYS: the recent list, a per-turn marker ('' for none). ARGV: max length, ttl, messages...
_APPEND_ONCE = """
if KEYS[2] ~= '' and not redis.call('SET', KEYS[2], 1, 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[1], unpack(ARGV, 3))
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


def recent_key(conversation_id: str) -> str:
    return f"turnflow:conv:{conversation_id}:recent"


class Transcript:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        redis: Redis,
        events: TurnEvents,
        rate_limits: RateLimiter | None = None,
        admission: TurnAdmission | None = None,
    ) -> None:
        self.sessions = sessions
        self.redis = redis
        self.events = events
        self.rate_limits = rate_limits
        self.admission = admission
        self._append = redis.register_script(_APPEND_ONCE)
        # Metrics label tenants by name (ids would be unbounded in dashboards' eyes); names never change.
        self._tenant_names: dict[str, str] = {}

    async def recent(self, conversation_id: str) -> list[Message]:
        """The last messages, oldest first; from Redis, or from Postgres when Redis has evicted them."""
        try:
            cached = await self.redis.lrange(recent_key(conversation_id), 0, -1)
        except REDIS_UNAVAILABLE as exc:
            degraded("recent context read from Postgres", exc)
            cached = []
        if cached:
            return [json.loads(item) for item in cached]
        async with self.sessions() as session:
            rows = (
                await session.scalars(
                    select(MessageRow)
                    .where(
                        MessageRow.conversation_id == uuid.UUID(conversation_id),
                        MessageRow.redacted.is_(False),
                        MessageRow.content != "",
                    )
                    # Newest first; within a turn (one timestamp) the reply before the question,
                    # so that reversed, each question precedes its reply.
                    .order_by(MessageRow.created_at.desc(), MessageRow.role.asc())
                    .limit(RECENT_MESSAGES)
                )
            ).all()
        messages = [{"role": r.role, "content": r.content} for r in reversed(rows)]
        if messages:
            try:
                await self._remember(conversation_id, messages)
            except REDIS_UNAVAILABLE as exc:
                degraded("recent context not cached", exc)
        return messages

    async def _remember(self, conversation_id: str, messages: list[Message], turn_id: str = "") -> None:
        """Append to the conversation's cached context; with a turn id, at most once per turn, so a
        retried persist (its Redis step failed after the commit) never caches the exchange twice."""
        marker = f"turnflow:conv:{conversation_id}:cached:{turn_id}" if turn_id else ""
        await self._append(
            keys=[recent_key(conversation_id), marker],
            args=[RECENT_MESSAGES, RECENT_TTL_S, *[json.dumps(m) for m in messages]],
        )

    @activity.defn(name="persist_turn")
    async def persist_turn(self, inp: PersistInput) -> PersistResult:
        """Both messages in one transaction; a retry finds them (unique on turn and role) and adds nothing."""
        tenant, conversation = uuid.UUID(inp.tenant_id), uuid.UUID(inp.conversation_id)
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
        common = {
            "tenant_id": tenant,
            "conversation_id": conversation,
            "turn_id": inp.turn_id,
            "request_id": inp.request_id,
            "interactive": inp.interactive,
        }
        # Both rows name every column: a multi-row INSERT takes its columns from the first row.
        rows = [
            {
                **common,
                **dict.fromkeys(provenance),
                "id": uuid.uuid4(),
                "role": "user",
                "content": inp.user_text,
                "pii_redacted": inp.pii_redacted,
            },
            {
                **common,
                **provenance,
                "id": uuid.uuid4(),
                "role": "assistant",
                "content": inp.assistant_text,
                "pii_redacted": False,
            },
        ]
        async with self.sessions.begin() as session:
            ids = dict(
                (
                    await session.execute(
                        insert(MessageRow)
                        .values(rows)
                        .on_conflict_do_nothing(constraint="uq_messages_turn_role")
                        .returning(MessageRow.role, MessageRow.id)
                    )
                ).all()
            )
            inserted = len(ids) == len(rows)
            if inserted and inp.tenant_id not in self._tenant_names:
                name = await session.scalar(select(Tenant.name).where(Tenant.id == tenant))
                self._tenant_names[inp.tenant_id] = name or inp.tenant_id
            if not inserted:  # a retry: an earlier attempt wrote them
                ids = dict(
                    (
                        await session.execute(
                            select(MessageRow.role, MessageRow.id).where(MessageRow.turn_id == inp.turn_id)
                        )
                    ).all()
                )
        if inserted:
            record_turn(inp, self._tenant_names[inp.tenant_id])
        # Past the commit, Redis must be reached (context cache, limits, the turn's place, its
        # terminal event): while it is down this step fails and is retried, and each part is
        # idempotent, so the retry completes what the first attempt could not.
        if inp.status == "completed" and inp.assistant_text:
            await self._remember(
                inp.conversation_id,
                [
                    {"role": "user", "content": inp.user_text},
                    {"role": "assistant", "content": inp.assistant_text},
                ],
                turn_id=inp.turn_id,
            )
        if self.rate_limits is not None:
            # The tenant's tokens per window (once per turn, however often this step is retried).
            used = (inp.input_tokens or 0) + (inp.output_tokens or 0)
            await self.rate_limits.tokens_used(inp.tenant_id, inp.turn_id, used)
        if self.admission is not None:
            await self.admission.release(inp.turn_id)  # recorded, however it ended: room for the next
        result = PersistResult(user_message_id=str(ids["user"]), assistant_message_id=str(ids["assistant"]))
        if inp.status == "error":
            await self.events.publish(
                inp.turn_id, "error", {**(inp.error or {}), "message_id": result.assistant_message_id}
            )
        else:
            await self.events.publish(
                inp.turn_id,
                "done",
                {
                    "message_id": result.assistant_message_id,
                    "finish_reason": inp.finish_reason,
                    "usage": {"input_tokens": inp.input_tokens, "output_tokens": inp.output_tokens},
                    "ttft_ms": inp.ttft_ms,
                    "latency_ms": inp.latency_ms,
                    "model": inp.model_id,
                    "model_version": inp.model_version,
                    "route": (inp.route or {}).get("rule"),
                    "cost_usd": f"{inp.cost_usd:f}" if inp.cost_usd is not None else None,
                    "degraded": inp.degraded,
                    "moderation": "pending" if inp.moderation_pending else "none",
                },
            )
        return result
