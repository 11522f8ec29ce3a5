"""`turnflow codec`: the keys that encrypt Temporal payloads."""

from __future__ import annotations

import typer

from infra.cli.common import console, settings_or_exit

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
