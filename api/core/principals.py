"""API keys' principals, kept in the process for a few seconds: a request's key lookup (a join of keys
and tenants) was a database round trip before every turn. A revoked key stops working at once on
every API process (`turnflow keys revoke` publishes it over Redis, each process forgets it), and at
the latest after the cache's lifetime should that message be missed (a process disconnected from
Redis meanwhile forgets everything when it reconnects).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from datetime import UTC, datetime

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.adapters.channels import follow_channel
from db.access import Principal, find_principal, hash_key

REVOKED_CHANNEL = "turnflow:keys:revoked"
# The bound on how long a revoked key may still work should its message be missed (docs/security.md).
TTL_S = 5.0
MAX_ENTRIES = 10_000  # keys seen within TTL_S on one process; unknown keys are never kept


async def announce_revoked(redis: Redis, prefix: str) -> None:
    """Tell every API process that the key with this prefix no longer works."""
    await redis.publish(REVOKED_CHANNEL, prefix)


class PrincipalCache:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], ttl_s: float = TTL_S) -> None:
        self.sessions, self.ttl_s = sessions, ttl_s
        # sha256 of the whole key → (principal, when to look it up again): a wrong secret with a
        # right prefix never finds another key's entry.
        self._entries: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    async def find(self, key: str) -> Principal | None:
        digest, now = hash_key(key), time.monotonic()
        hit = self._entries.get(digest)
        if hit is not None and hit[1] > now:
            principal = hit[0]
            if principal.expires_at is None or principal.expires_at > datetime.now(UTC):
                return principal
        self._entries.pop(digest, None)
        found = await find_principal(self.sessions, key)
        if found is not None:
            self._entries[digest] = (found, now + self.ttl_s)
            while len(self._entries) > MAX_ENTRIES:
                self._entries.popitem(last=False)
        return found

    def forget(self, prefix: str | None = None) -> None:
        """The key with this prefix (None: every key) is looked up again on its next request."""
        if prefix is None:
            self._entries.clear()
            return
        for digest in [d for d, (p, _) in self._entries.items() if p.key_prefix == prefix]:
            del self._entries[digest]

    async def follow_revocations(self, redis: Redis, retry_s: float = 1.0) -> None:
        """Forget revoked keys as they are announced; runs until cancelled. While Redis is away,
        entries still expire within TTL_S."""

        async def forget_all() -> None:
            self.forget()

        await follow_channel(
            redis,
            REVOKED_CHANNEL,
            self.forget,
            on_subscribed=forget_all,
            outage="key revocations not followed; cached keys lapse within 5 s",
            on_outage=self.forget,
            retry_s=retry_s,
        )
