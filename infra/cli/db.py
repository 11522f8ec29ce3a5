"""`turnflow db`: migrations and the vector index."""

from __future__ import annotations

from typing import Annotated

import typer

from db.vector_index import configured_index
from infra.cli.common import console, settings_or_exit

db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations to the configured (or embedded, running) database."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    from db.migrate import upgrade
    from infra.config.endpoints import Endpoints

    settings = settings_or_exit()
    url = Endpoints.resolve(settings).database_url
    try:
        upgrade(url, revision)
    except OperationalError as exc:
        where = make_url(url).render_as_string(hide_password=True)
        console.print(f"[red]✗ cannot reach the database at {where}: {exc.orig}[/]")
        console.print("  start it with `turnflow up`, or set TURNFLOW_DATABASE_URL")
        raise typer.Exit(1) from exc
    console.print(f"database at {revision}")


@db_app.command("reindex")
def db_reindex() -> None:
    """Build the chunk vectors' index as configured (TURNFLOW_VECTOR_INDEX, _PRECISION, TURNFLOW_HNSW_M,
    _EF_CONSTRUCTION, TURNFLOW_IVFFLAT_LISTS) beside the current one, then swap them."""
    from sqlalchemy.engine import make_url

    from db.vector_index import describe, rebuild
    from infra.config.endpoints import Endpoints

    settings = settings_or_exit()
    url = make_url(Endpoints.resolve(settings).database_url).set(drivername="postgresql")
    conninfo = url.render_as_string(hide_password=False)
    index = configured_index(settings)
    console.print(f"building {index.create_sql()} ...")
    try:
        took = rebuild(conninfo, index)
    except Exception as exc:  # psycopg's errors: say which, and stop
        console.print(f"[red]✗ reindex failed: {exc}[/]")
        raise typer.Exit(1) from exc
    console.print(f"built in {took:.1f} s; now: {'; '.join(describe(conninfo))}")
