"""`turnflow codec`: the keys that encrypt Temporal payloads."""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING, Annotated

import typer

from db.tenant_keys import shred_tenant
from infra.cli.access import tenant_id
from infra.cli.common import console, settings_or_exit, with_resources

if TYPE_CHECKING:
    from infra.runtime.resources import Resources

codec_app = typer.Typer(help="The keys that encrypt Temporal payloads.", no_args_is_help=True)


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
    from db.tenant_keys import rewrap_all
    from infra.runtime.payload_codec import deployment_keys
    from infra.runtime.tenant_keys import LocalKeyWrapper

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
