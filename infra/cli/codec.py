"""`turnflow codec`: the keys that encrypt Temporal payloads and tenants' text at rest."""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING, Annotated

import typer

from db.tenant_keys import shred_tenant
from infra.cli.access import tenant_id
from infra.cli.common import console, settings_or_exit, with_resources

if TYPE_CHECKING:
    from infra.runtime.resources import Resources

codec_app = typer.Typer(
    help="The keys that encrypt Temporal payloads and tenants' text at rest.", no_args_is_help=True
)


@codec_app.command("keygen")
def codec_keygen() -> None:
    """Print a new payload key, `id:base64`, for TURNFLOW_PAYLOAD_KEYS (a Kubernetes Secret: docs/deploy.md).
    Nothing is stored; keep what it prints secret."""
    from infra.runtime.payload_codec import new_key_line

    typer.echo(new_key_line())


@codec_app.command("rotate")
def codec_rotate() -> None:
    """Add a new payload key to <data dir>/payload-keys: processes started from now on encrypt with it;
    payloads written with older keys still decrypt. (With TURNFLOW_PAYLOAD_KEYS, put a new key first.)"""
    from infra.runtime.payload_codec import rotate

    settings = settings_or_exit()
    if settings.payload_keys:
        console.print("[red]✗ keys come from TURNFLOW_PAYLOAD_KEYS: put the new key first there[/]")
        raise typer.Exit(2)
    key_id = rotate(settings.payload_key_file)
    console.print(
        f"new payload key {key_id} in {settings.payload_key_file}; restart the stack to encrypt with it"
    )


@codec_app.command("rewrap")
def codec_rewrap() -> None:
    """Wrap every tenant's data key again under the newest payload key (after `rotate`): no payload is
    re-encrypted, and the older payload key can then be retired."""
    from activities.adapters.tenant_keys import LocalKeyWrapper
    from db.tenant_keys import rewrap_all
    from infra.runtime.payload_codec import deployment_keys

    wrapper = LocalKeyWrapper(deployment_keys(settings_or_exit()))

    def rewrap(wrapped: bytes, kek_id: str) -> tuple[bytes, str]:
        if kek_id == wrapper.kek_id:
            return wrapped, kek_id
        return wrapper.wrap(wrapper.unwrap(wrapped, kek_id)), wrapper.kek_id

    async def work(res: Resources) -> int:
        async with res.sessions.begin() as session:
            return await rewrap_all(session, rewrap)

    changed = with_resources(work)
    console.print(f"{changed} tenant keys wrapped again under {wrapper.kek_id}")


@codec_app.command("shred")
def codec_shred(
    tenant: Annotated[str, typer.Option(help="the tenant, by name")],
    yes: Annotated[
        bool, typer.Option("--yes", help="confirm: none of its payloads can be read again")
    ] = False,
) -> None:
    """Destroy the tenant's data keys (crypto-shredding): every copy of its Temporal payloads, old
    histories and backups included, stays ciphertext for good. Processes that hold the key in memory
    lose it within TURNFLOW_TENANT_KEY_CACHE_S."""
    if not yes:
        console.print("[red]✗ this cannot be undone: add --yes to mean it[/]")
        raise typer.Exit(2)

    async def work(res: Resources) -> int:
        found = await tenant_id(res, tenant)
        return await shred_tenant(res.sessions, found, f"cli:{getpass.getuser()}")

    console.print(f"destroyed {with_resources(work)} key(s) of tenant {tenant}")


@codec_app.command("seal-at-rest")
def codec_seal_at_rest(
    tenant: Annotated[str | None, typer.Option(help="one tenant, by name (default: every tenant)")] = None,
) -> None:
    """Seal, with each tenant's key, the message text, conversation titles, chunks and uploads still in
    the clear in Postgres (written before sealing at rest, or with TURNFLOW_AT_REST_ENCRYPTION off).
    Resumable: run it again after an interruption. Redis copies expire on their own within a day."""
    from sqlalchemy import select

    from activities.adapters.tenant_keys import KeyShredded
    from db.models import Tenant
    from db.sealing import seal_clear_rows

    async def work(res: Resources) -> dict[str, dict[str, int]]:
        if not res.sealer.enabled:
            console.print("[red]✗ TURNFLOW_AT_REST_ENCRYPTION is off: nothing would be sealed[/]")
            raise typer.Exit(2)
        if tenant is not None:
            tenants = [(tenant, await tenant_id(res, tenant))]
        else:
            async with res.sessions() as session:
                tenants = [(t.name, t.id) for t in (await session.scalars(select(Tenant))).all()]
        done = {}
        for name, tid in tenants:
            try:
                done[name] = await seal_clear_rows(res.sessions, tid, res.sealer.seal, res.sealer.seal_bytes)
            except KeyShredded:
                console.print(f"{name}: its key is destroyed (erased); skipped")
                continue
            console.print(f"{name}: " + ", ".join(f"{n} {table}" for table, n in done[name].items()))
        return done

    done = with_resources(work)
    console.print(f"sealed {sum(sum(c.values()) for c in done.values())} rows across {len(done)} tenant(s)")
