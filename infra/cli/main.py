"""The `turnflow` command line: each command group lives in its own module; this only adds them."""

from __future__ import annotations

import typer

from infra.cli import (
    access,
    audit,
    codec,
    db,
    deploy,
    erase,
    eval,
    experiments,
    feedback,
    ingest,
    models,
    reembed,
    replay,
    retention,
    slo,
    trace,
    up,
)

app = typer.Typer(help="turnflow: durable chat turns on Temporal.", no_args_is_help=True)
app.add_typer(up.app)
app.add_typer(db.db_app, name="db")
app.add_typer(ingest.app)
app.add_typer(reembed.app)
app.add_typer(eval.app)
app.add_typer(eval.eval_app, name="eval")
app.add_typer(models.app)
app.add_typer(models.models_app, name="models")
app.add_typer(feedback.feedback_app, name="feedback")
app.add_typer(experiments.experiments_app, name="experiments")
app.add_typer(access.tenants_app, name="tenants")
app.add_typer(access.keys_app, name="keys")
app.add_typer(audit.audit_app, name="audit")
app.add_typer(replay.app)
app.add_typer(trace.app)
app.add_typer(slo.app)
app.add_typer(retention.app)
app.add_typer(erase.app)
app.add_typer(codec.codec_app, name="codec")
app.add_typer(deploy.deploy_app, name="deploy")


if __name__ == "__main__":
    app()
