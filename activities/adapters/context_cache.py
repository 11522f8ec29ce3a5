"""Each conversation's recent messages in Redis, the prompt's history without a Postgres read.

Written once per recorded turn (idempotent under retries), trimmed to the last RECENT_MESSAGES,
expiring after a day idle; read back from Postgres and cached again when Redis has evicted it.
Each cached message is sealed with the tenant's key, as in Postgres.
"""

from __future__ import annotations

import json

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.adapters.outages import REDIS_UNAVAILABLE, degraded
from activities.adapters.sealed_text import SealedText
from activities.contracts.turn import Message
from db.messages import recent_messages

RECENT_MESSAGES = 20
RECENT_TTL_S = 24 * 3600

# KEYS: the recent list, and a per-turn marker when there is one. ARGV: max length, ttl, messages...
_APPEND_ONCE = """
if #KEYS > 1 and not redis.call('SET', KEYS[2], 1, 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[1], unpack(ARGV, 3))
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


def recent_key(conversation_id: str) -> str:
    # Hash-tagged by conversation: the append script's keys are in one Redis Cluster slot.
    return f"turnflow:conv:{{{conversation_id}}}:recent"


class ContextCache:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], redis: Redis, sealer: SealedText) -> None:
        self.sessions = sessions
        self.redis = redis
        self.sealer = sealer
        self._append = redis.register_script(_APPEND_ONCE)

    async def recent(self, tenant_id: str, conversation_id: str) -> list[Message]:
        """The last messages, oldest first; from Redis, or from Postgres when Redis has evicted them."""
        try:
            cached = await self.redis.lrange(recent_key(conversation_id), 0, -1)
        except REDIS_UNAVAILABLE as exc:
            degraded("recent context read from Postgres", exc)
            cached = []
        if cached:
            return [json.loads(await self.sealer.open(tenant_id, _text(item))) for item in cached]
        async with self.sessions() as session:
            stored = await recent_messages(session, conversation_id, RECENT_MESSAGES)
        messages: list[Message] = [
            {"role": m["role"], "content": await self.sealer.open(tenant_id, m["content"])} for m in stored
        ]
        if messages:
            try:
                await self.remember(tenant_id, conversation_id, messages)
            except REDIS_UNAVAILABLE as exc:
                degraded("recent context not cached", exc)
        return messages

    async def remember(
        self, tenant_id: str, conversation_id: str, messages: list[Message], turn_id: str = ""
    ) -> None:
        """Append to the conversation's cached context; with a turn id, at most once per turn, so a
        retried persist (its Redis step failed after the commit) never caches the exchange twice."""
        keys = [recent_key(conversation_id)]
        if turn_id:
            keys.append(f"turnflow:conv:{{{conversation_id}}}:cached:{turn_id}")
        sealed = [await self.sealer.seal(tenant_id, json.dumps(m)) for m in messages]
        await self._append(keys=keys, args=[RECENT_MESSAGES, RECENT_TTL_S, *sealed])


def _text(item: bytes | str) -> str:
    return item.decode() if isinstance(item, bytes) else item
