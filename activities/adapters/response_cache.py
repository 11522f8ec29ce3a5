"""An exact cache of whole replies, per tenant, in Redis.

Its key is a digest of everything that decides the answer: the model and its version, the prompt
template's version, the assembled prompt's messages (so the history and the retrieved passages are
in it), the passages' ids and versions, the sampling parameters and the reply budget. A changed
document changes its chunks' versions and text, so entries made from the old ones are never reached
again; they expire (`TURNFLOW_RESPONSE_CACHE_TTL_S`) or are evicted, oldest first, past
`TURNFLOW_RESPONSE_CACHE_ENTRIES` per tenant. Only replies that moderation found clean are put in
(activities/chat/moderation.py), so a hit carries that verdict over. Each entry is sealed with the
tenant's key, and erasing a conversation deletes the entries its turns made.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from activities.adapters.sealed_text import SealedText
from activities.contracts.route import ModelTarget
from activities.contracts.sampling import Sampling
from activities.contracts.turn import CachedReply, ContextChunk, Message

KEY_VERSION = 1

# KEYS: entry, index, conversation's set. ARGV: sealed entry, ttl, now, key, max entries, prefix.
_PUT = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[2])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if over > 0 then
  for _, old in ipairs(redis.call('ZPOPMIN', KEYS[2], over)) do
    if old:len() == 64 then redis.call('DEL', ARGV[6] .. old) end
  end
end
return 1
"""


def cache_key(
    target: ModelTarget,
    template_version: str,
    messages: Sequence[Message],
    chunks: Sequence[ContextChunk],
    temperature: float | None,
    max_tokens: int,
    sampling: Sampling | None,
    safety_version: str,
) -> str:
    """A digest of what decides the reply (the tenant is the key's prefix, not part of the digest)."""
    material = {
        "v": KEY_VERSION,
        "model": target.name,
        "model_version": target.version,
        "template": template_version,
        "messages": list(messages),
        "chunks": [[c.id, c.document_version, c.embedding_version] for c in chunks],
        "temperature": temperature,
        "max_tokens": max_tokens,
        "sampling": sampling.model_dump(mode="json", exclude_none=True) if sampling else None,
        # Rules that changed may judge the same reply otherwise.
        "safety": safety_version,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _prefix(tenant_id: str) -> str:
    # Hash-tagged by tenant: an entry, its index and its conversation's set share a Cluster slot.
    return f"turnflow:rc:{{{tenant_id}}}:"


class ResponseCache:
    def __init__(self, redis: Redis, sealer: SealedText, ttl_s: int, max_entries: int) -> None:
        self.redis = redis
        self.sealer = sealer
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._put = redis.register_script(_PUT)

    async def get(self, tenant_id: str, key: str) -> CachedReply | None:
        raw: Any = await self.redis.get(_prefix(tenant_id) + key)
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return CachedReply.model_validate_json(await self.sealer.open(tenant_id, text))

    async def put(self, tenant_id: str, key: str, reply: CachedReply) -> None:
        prefix = _prefix(tenant_id)
        sealed = await self.sealer.seal(tenant_id, reply.model_dump_json())
        await self._put(
            keys=[prefix + key, prefix + "index", f"{prefix}conv:{reply.conversation_id}"],
            args=[sealed, self.ttl_s, time.time(), key, self.max_entries, prefix],
        )

    async def forget_conversation(self, tenant_id: str, conversation_id: str) -> int:
        """Delete the entries the conversation's turns made (erasure); how many there were."""
        prefix = _prefix(tenant_id)
        members: Any = await self.redis.smembers(f"{prefix}conv:{conversation_id}")
        keys = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
        if not keys:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(*(prefix + k for k in keys), f"{prefix}conv:{conversation_id}")
            pipe.zrem(prefix + "index", *keys)
            await pipe.execute()
        return len(keys)
