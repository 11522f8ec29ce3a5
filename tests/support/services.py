"""The test services as the fixtures hand them out, and plain helpers over them."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from infra.config.endpoints import Endpoints, libpq_url
from infra.config.policy import Policy
from infra.config.settings import Settings
from infra.stack.supervisor import Supervisor

_handed_out: set[int] = set()


def free_port() -> int:
    """A port free now and never handed out before in this test session."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
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


def messages_of(services: Services, turn_id: str) -> list[tuple[str, str, str | None]]:
    with psycopg.connect(psycopg_url(services.endpoints.database_url)) as conn:
        rows = conn.execute(
            "SELECT role, content, finish_reason FROM messages WHERE turn_id = %s ORDER BY role DESC",
            (turn_id,),
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]
