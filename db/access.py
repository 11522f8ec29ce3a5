"""Tenants and API keys: create, find, revoke. A key is shown once; only its SHA-256 is stored.

Keys look like ``tf_<prefix>_<secret>``: the prefix (public, unique) finds the row, the hash of the
whole key proves it. The secret is 256 random bits, so a fast hash is enough (as for GitHub tokens);
a slow password hash would only add latency to every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import ApiKey, Tenant
from infra.config.settings import Settings

SCOPES = ("chat", "ingest", "admin", "operator")
# Scopes over the whole platform, not one tenant: a tenant's admin does not hold them.
PLATFORM_SCOPES = frozenset({"operator"})
KEY_PREFIX = "tf_"


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a key of one tenant, with its scopes."""

    tenant_id: uuid.UUID
    tenant_name: str
    key_id: uuid.UUID
    key_prefix: str
    scopes: frozenset[str]
    # The tenant's own rate limits (None: the deployment's defaults).
    requests_per_min: int | None = None
    tokens_per_min: int | None = None
    # The tenant's PII policy: kind → redact | mask | allow (activities/logic/pii.py); absent kinds
    # are redacted.
    pii: dict[str, str] = field(default_factory=dict)
    # Where the tenant's data may live: every store and model it uses must carry all of these.
    residency: frozenset[str] = frozenset()
    # The hosts its webhooks may reach (`*.example.com` for subdomains); empty: any the rules allow.
    webhook_hosts: tuple[str, ...] = ()
    # When the key stops working by itself (None: never); a cached principal honours it too.
    expires_at: datetime | None = None
    # Whether a turn shed at capacity is answered from the tenant's documents instead of a 503
    # (policy `answer_when_shed`, default no: the 503 with Retry-After is the backpressure contract).
    answer_when_shed: bool = False

    def may(self, *any_of: str) -> bool:
        if self.scopes & set(any_of):
            return True
        return "admin" in self.scopes and not set(any_of) <= PLATFORM_SCOPES


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """(the full key, its public prefix)."""
    prefix = secrets.token_hex(6)
    return f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}", prefix


def prefix_of(key: str) -> str | None:
    if not key.startswith(KEY_PREFIX):
        return None
    prefix, _, secret = key[len(KEY_PREFIX) :].partition("_")
    return prefix if prefix and secret else None


async def ensure_tenant(sessions: async_sessionmaker[AsyncSession], name: str) -> uuid.UUID:
    async with sessions.begin() as session:
        await session.execute(insert(Tenant).values(id=uuid.uuid4(), name=name).on_conflict_do_nothing())
        tenant_id: uuid.UUID = (
            await session.execute(select(Tenant.id).where(Tenant.name == name))
        ).scalar_one()
    return tenant_id


async def create_key(
    sessions: async_sessionmaker[AsyncSession],
    tenant_id: uuid.UUID,
    name: str,
    scopes: list[str],
    expires_at: datetime | None = None,
) -> tuple[str, ApiKey]:
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)} (got {', '.join(scopes) or 'none'})")
    key, prefix = new_key()
    row = ApiKey(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        name=name,
        prefix=prefix,
        secret_hash=hash_key(key),
        scopes=sorted(set(scopes)),
        expires_at=expires_at,
    )
    async with sessions.begin() as session:
        session.add(row)
    return key, row


async def find_principal(sessions: async_sessionmaker[AsyncSession], key: str) -> Principal | None:
    """The key's principal, or None: unknown, wrong secret, revoked and expired keys all look alike."""
    prefix = prefix_of(key)
    if prefix is None:
        return None
    async with sessions() as session:
        row = (
            await session.execute(
                select(ApiKey, Tenant.name, Tenant.settings, Tenant.residency_tags)
                .join(Tenant, Tenant.id == ApiKey.tenant_id)
                .where(ApiKey.prefix == prefix)
            )
        ).one_or_none()
    if row is None:
        return None
    api_key, tenant_name, policy, residency = row
    if not hmac.compare_digest(api_key.secret_hash, hash_key(key)):
        return None
    now = datetime.now(UTC)
    if api_key.revoked_at is not None or (api_key.expires_at is not None and api_key.expires_at <= now):
        return None
    limits = {
        k: int(policy[k]) if policy.get(k) is not None else None
        for k in ("requests_per_min", "tokens_per_min")
    }
    return Principal(
        api_key.tenant_id,
        tenant_name,
        api_key.id,
        prefix,
        frozenset(api_key.scopes),
        **limits,
        pii=dict(policy.get("pii") or {}),
        webhook_hosts=tuple(policy.get("webhook_hosts") or ()),
        residency=frozenset(residency or ()),
        expires_at=api_key.expires_at,
        answer_when_shed=policy.get("answer_when_shed") is True
        and policy.get("degraded_answers") is not False,
    )


async def touch_key(sessions: async_sessionmaker[AsyncSession], key_id: uuid.UUID) -> None:
    """Record that the key was just used (shown by `turnflow keys list`)."""
    async with sessions.begin() as session:
        await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=func.now()))


async def revoke_key(sessions: async_sessionmaker[AsyncSession], prefix: str) -> bool:
    async with sessions.begin() as session:
        done = await session.execute(
            update(ApiKey)
            .where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
            .returning(ApiKey.id)
        )
        return done.first() is not None


DEMO_TENANT = "default"


def demo_key_file(settings: Settings) -> Path:
    return settings.data_dir / "demo-api-key"


def read_demo_key(settings: Settings) -> str | None:
    """The demo key `turnflow up` wrote into this data dir, if any (for local tools and benchmarks)."""
    path = demo_key_file(settings)
    return path.read_text().strip() if path.exists() else None


async def ensure_demo_key(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> str:
    """The demo tenant's key, kept in the data dir (owner-only); made on the first `up`."""
    path = demo_key_file(settings)
    if path.exists() and await find_principal(sessions, key := path.read_text().strip()):
        return key
    tenant = await ensure_tenant(sessions, DEMO_TENANT)
    # A dev stack's one user is also its operator (SLOs, drift, the dashboard).
    key, _ = await create_key(sessions, tenant, "demo (turnflow up)", ["chat", "ingest", "admin", "operator"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    return key


async def tenant_webhook_hosts(sessions: async_sessionmaker[AsyncSession], tenant: uuid.UUID) -> list[str]:
    """The hosts the tenant's webhooks may reach (its `webhook_hosts` setting); empty: any allowed."""
    async with sessions() as session:
        settings = await session.scalar(select(Tenant.settings).where(Tenant.id == tenant))
    return list((settings or {}).get("webhook_hosts") or [])
