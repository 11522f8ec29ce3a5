"""`python -m infra.cli`: the same as the `turnflow` command."""

from infra.cli.main import app

app()
