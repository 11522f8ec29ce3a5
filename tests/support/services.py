"""The test services as the fixtures hand them out, and plain helpers over them."""

from __future__ import annotations

import base64
import json
import random
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from activities.adapters.tenant_keys import LocalKeyWrapper
from infra.config.endpoints import Endpoints, libpq_url
from infra.config.policy import Policy
from infra.config.settings import Settings
from infra.runtime.payload_codec import deployment_keys
from infra.stack.supervisor import Supervisor

_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port free now and never handed out before in this test session.

    Drawn below the kernel's ephemeral range: ports the kernel hands out by itself (outgoing
    connections, servers such as Temporal's dev server binding port 0 for internal services) can
    then never take a port a test chose for a component it starts later.
    """
    high = _ephemeral_low() - 1
    while True:
        port = random.randint(max(1024, high - 12000), high)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


@dataclass
class Services:
    settings: Settings
    endpoints: Endpoints
    policy: Policy
    supervisor: Supervisor
    data_dir: Path


def db_rows(services: Services, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Rows of one query against the test database, as its owner (row-level security aside)."""
    with psycopg.connect(psycopg_url(services.endpoints.database_url)) as conn:
        return conn.execute(sql, params).fetchall()


psycopg_url = libpq_url  # the name the tests use


def set_tenant_policy(services: Services, name: str, **policy: object) -> None:
    """Merge ``policy`` into a tenant's settings (before its key's first use: principals and
    routing cache a tenant's policy for a few seconds)."""
    db_rows(
        services,
        "UPDATE tenants SET settings = settings || %s::jsonb WHERE name = %s RETURNING id",
        json.dumps(policy),
        name,
    )


def open_sealed(services: Services, tenant_id: uuid.UUID, value: str) -> str:
    """A value turnflow sealed at rest (activities/adapters/sealed_text.py), opened from the database
    as an auditor holding the deployment's keys would: clear values come back as they are."""
    if not value.startswith("tf1:"):
        return value
    version, _, encoded = value.removeprefix("tf1:").partition(":")
    [(wrapped, kek_id)] = db_rows(
        services,
        "SELECT wrapped, kek_id FROM tenant_keys WHERE tenant_id = %s AND version = %s",
        tenant_id,
        int(version),
    )
    key = LocalKeyWrapper(deployment_keys(services.settings)).unwrap(wrapped, kek_id)
    sealed = base64.b64decode(encoded)
    return AESGCM(key).decrypt(sealed[:12], sealed[12:], tenant_id.bytes).decode()


def messages_of(services: Services, turn_id: str) -> list[tuple[str, str, str | None]]:
    """The turn's (role, content opened, finish reason), the reply first."""
    rows = db_rows(
        services,
        "SELECT role, tenant_id, content, finish_reason FROM messages WHERE turn_id = %s ORDER BY role DESC",
        turn_id,
    )
    return [(role, open_sealed(services, tenant, content), reason) for role, tenant, content, reason in rows]


def opened(services: Services, sql: str, *params: object) -> list[str]:
    """The second column of each row, opened with the tenant in the first."""
    return [open_sealed(services, tenant, value) for tenant, value in db_rows(services, sql, *params)]
