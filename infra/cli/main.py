"""The `turnflow` command line."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import httpx
import typer
from rich.console import Console
from rich.table import Table

from db.vector_index import configured_index
from infra.config.policy import Policy, PolicyError, load_policy
from infra.config.settings import Settings, get_settings
from infra.stack.doctor import run_checks, run_probe
from infra.stack.state import pid_alive, running_state
from infra.telemetry.logging_setup import configure_logging

app = typer.Typer(help="turnflow: durable chat turns on Temporal.", no_args_is_help=True)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
eval_app = typer.Typer(help="Evaluate turnflow's quality on data sets.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")
tenants_app = typer.Typer(help="Tenants and their policies.", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")
keys_app = typer.Typer(help="API keys (stored hashed; shown once).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
codec_app = typer.Typer(help="The keys that encrypt Temporal payloads.", no_args_is_help=True)
app.add_typer(codec_app, name="codec")
models_app = typer.Typer(
    help="The model registry: state, canary promotion and rollback.", no_args_is_help=True
)
app.add_typer(models_app, name="models")
console = Console()
T = TypeVar("T")

if TYPE_CHECKING:
    from infra.runtime.resources import Resources


def _settings() -> Settings:
    try:
        return get_settings()
    except ValueError as exc:
        console.print(f"[red]✗ invalid settings: {exc}[/]")
        raise typer.Exit(2) from exc


def _demo_key(settings: Settings) -> str:
    from db.access import demo_key_file

    path = demo_key_file(settings)
    if not path.exists():
        console.print(
            f"[red]✗ no API key: pass --api-key (or TURNFLOW_API_KEY); {path} appears on `turnflow up`[/]"
        )
        raise typer.Exit(2)
    return path.read_text().strip()


def _policy(settings: Settings) -> Policy:
    try:
        return load_policy(settings.policy_file)
    except PolicyError as exc:
        console.print(f"[red]✗ {exc}[/]")
        raise typer.Exit(2) from exc


@app.command()
def up() -> None:
    """Start the whole stack (embedded services where no URL is set) and supervise it until Ctrl-C."""
    from infra.stack.up import run_up

    settings = _settings()
    policy = _policy(settings)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    running = running_state(settings.data_dir)
    if running:
        console.print(
            f"[red]✗ turnflow is already running from {settings.data_dir} "
            f"(pid {running.supervisor_pid}); see `turnflow status` or `turnflow down`[/]"
        )
        raise typer.Exit(1)
    configure_logging(settings.log_level)
    handler = logging.FileHandler(settings.log_dir / "supervisor.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    raise typer.Exit(asyncio.run(run_up(settings, policy, console)))


@app.command()
def down(timeout: Annotated[float, typer.Option(help="seconds to wait")] = 60.0) -> None:
    """Stop a stack started by `turnflow up` (from another terminal)."""
    settings = _settings()
    state = running_state(settings.data_dir)
    if state is None:
        console.print("turnflow is not running")
        return
    os.kill(state.supervisor_pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    with console.status("stopping…"):
        while pid_alive(state.supervisor_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    if pid_alive(state.supervisor_pid):
        console.print(f"[red]✗ supervisor (pid {state.supervisor_pid}) still running after {timeout:.0f}s[/]")
        raise typer.Exit(1)
    console.print("stopped.")


@app.command()
def status() -> None:
    """Show the running stack's processes and the API's health report."""
    settings = _settings()
    state = running_state(settings.data_dir)
    if state is None:
        console.print("turnflow is not running")
        raise typer.Exit(3)
    table = Table(title=f"turnflow (supervisor pid {state.supervisor_pid})")
    for column in ("component", "pid", "process", "health", "detail"):
        table.add_column(column)
    health: dict[str, dict[str, object]] = {}
    api = state.urls.get("API")
    if api:
        try:
            health = httpx.get(f"{api}/healthz", timeout=10).json().get("components", {})
        except httpx.HTTPError as exc:
            console.print(f"[yellow]API health report unavailable: {exc}[/]")
    for name in sorted(set(state.pids) | set(health)):
        pid = state.pids.get(name)
        alive = "running" if pid and pid_alive(pid) else ("-" if pid is None else "dead")
        comp = health.get(name, {})
        detail = str(comp.get("error", "")) if comp.get("status") != "ok" else ""
        table.add_row(name, str(pid or "-"), alive, str(comp.get("status", "-")), detail)
    console.print(table)
    for name, url in state.urls.items():
        console.print(f"{name}: {url}")


@app.command()
def doctor(
    probe: Annotated[
        bool, typer.Option(help="also run the stack probe workflow against the running stack")
    ] = False,
) -> None:
    """Check that everything turnflow needs is installed and configured; say what is missing."""
    settings = _settings()
    failed = 0
    for check in run_checks(settings):
        mark = "[green]✓[/]" if check.ok else "[red]✗[/]"
        console.print(f"{mark} {check.name}: {check.detail}")
        failed += not check.ok
    if probe:
        ok, detail = asyncio.run(run_probe(settings))
        console.print(f"{'[green]✓[/]' if ok else '[red]✗[/]'} stack probe: {detail}")
        failed += not ok
        # The Temporal client's native runtime can abort while the interpreter finalizes; the
        # command's work is done and printed, so leave without finalizing.
        sys.stdout.flush()
        os._exit(1 if failed else 0)
    if failed:
        raise typer.Exit(1)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations to the configured (or embedded, running) database."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    from db.migrate import upgrade
    from infra.config.endpoints import Endpoints

    settings = _settings()
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

    settings = _settings()
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


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="files or folders (.txt, .md, .html, .pdf)")],
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="TURNFLOW_API_KEY",
            help="an ingest key; its tenant gets the documents (default: the demo key)",
        ),
    ] = None,
    api: Annotated[str | None, typer.Option(help="the API's URL (default: this stack's)")] = None,
    wait: Annotated[bool, typer.Option(help="wait until every document is searchable")] = True,
) -> None:
    """Upload documents to a running stack; each becomes searchable once its ingestion workflow ends."""
    from infra.cli.ingest import collect_files, ingest_files

    settings = _settings()
    try:
        files, skipped = collect_files(paths)
    except FileNotFoundError as exc:
        console.print(f"[red]✗ {exc}[/]")
        raise typer.Exit(2) from exc
    for path in skipped:
        console.print(f"[yellow]skipped {path}: not .txt, .md, .html or .pdf[/]")
    if not files:
        console.print("[red]✗ nothing to ingest[/]")
        raise typer.Exit(2)
    base = api or f"http://{settings.api_host}:{settings.api_port}"
    headers = {"Authorization": f"Bearer {api_key or _demo_key(settings)}"}
    outcomes = asyncio.run(ingest_files(base, files, headers, console, wait=wait))
    table = Table(title=f"{len(outcomes)} documents")
    for column in ("file", "status", "version", "chunks", "note"):
        table.add_column(column)
    for o in outcomes:
        colour = {"ready": "green", "unchanged": "green", "failed": "red", "rejected": "red", "error": "red"}
        table.add_row(
            str(o.path),
            f"[{colour.get(o.status, 'yellow')}]{o.status}[/]",
            str(o.document.get("version", "")),
            str(o.document.get("chunk_count", "")),
            o.error or "",
        )
    console.print(table)
    if any(o.status in ("failed", "rejected", "error") for o in outcomes):
        raise typer.Exit(1)


@app.command()
def reembed(
    model: Annotated[
        str | None, typer.Option(help="embedding model id to move to (default: the deployment's)")
    ] = None,
    version: Annotated[str | None, typer.Option(help="its version (default: the one configured)")] = None,
    tenant: Annotated[list[str] | None, typer.Option(help="only these tenants (by name); repeatable")] = None,
    wait: Annotated[bool, typer.Option(help="follow the run until it ends")] = True,
) -> None:
    """Re-embed tenants' chunks with another embedder: new vectors beside the old, a canary check,
    an atomic switch, then the old vectors dropped. Needs a running stack and worker."""
    from infra.cli.reembed import run_reembed

    settings = _settings()
    try:
        result = asyncio.run(run_reembed(settings, console, model, version, tenant, wait=wait))
    except (RuntimeError, LookupError) as exc:
        console.print(f"[red]✗ {exc}[/]")
        raise typer.Exit(1) from exc
    if result is None:
        return
    table = Table(title=f"re-embedded to {result.target.model}@{result.target.version}")
    for column in ("tenant", "status", "embedded", "canary recall new / current", "dropped"):
        table.add_column(column)
    for r in result.tenants:
        canary = f"{r.canary.recall_new:.2f} / {r.canary.recall_current:.2f}" if r.canary else ""
        table.add_row(r.tenant_id, r.status, str(r.embedded), canary, str(r.dropped))
    console.print(table)
    if any(r.status == "kept" for r in result.tenants):
        raise typer.Exit(1)


@eval_app.command("retrieval")
def eval_retrieval(
    dataset: Annotated[
        Path, typer.Option(help="a BEIR-format directory: corpus.jsonl, queries.jsonl, qrels/")
    ],
    split: Annotated[str, typer.Option(help="which qrels/<split>.tsv to score")] = "test",
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON only")] = False,
    queries: Annotated[int | None, typer.Option(help="score only the first N judged queries")] = None,
    keep: Annotated[
        bool, typer.Option(help="keep the scratch tenant, so the next run on this corpus skips ingestion")
    ] = False,
) -> None:
    """Ingest the data set into a scratch tenant; print nDCG@10, recall@10/100, MRR@10 and query
    latency for vector-only, full-text-only and hybrid search. Needs a running stack (`turnflow up`)."""
    import json

    from rich.progress import Progress

    from infra.eval.beir import DatasetError, load_beir
    from infra.eval.retrieval_eval import evaluate
    from infra.runtime.resources import Resources

    settings = _settings()
    try:
        data = load_beir(dataset, split)
    except (DatasetError, OSError) as exc:
        console.print(f"[red]✗ {exc}[/]")
        raise typer.Exit(2) from exc
    if queries:
        data = type(data)(data.corpus, dict(list(data.queries.items())[:queries]), data.qrels)

    async def run() -> dict[str, object]:
        res = await Resources.open(settings, lazy_temporal=True)
        try:
            with Progress(console=Console(stderr=True), transient=as_json) as bar:
                ingest = bar.add_task("ingesting", total=len(data.corpus))
                score = bar.add_task("querying", total=len(data.queries))
                return await evaluate(
                    res,
                    data,
                    on_ingest=lambda n: bar.advance(ingest, n),
                    on_query=lambda n: bar.advance(score, n),
                    keep=keep,
                )
        finally:
            await res.close()

    try:
        report = asyncio.run(run())
    except OSError as exc:
        console.print(f"[red]✗ cannot reach the stack: {exc}[/] (start it with `turnflow up`)")
        raise typer.Exit(1) from exc
    report = {"dataset": str(dataset), "split": split, **report}
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table(
        title=f"{dataset.name} ({split}): {report['queries']} queries, {report['documents']} documents"
    )
    for column in ("mode", "nDCG@10", "recall@10", "recall@100", "MRR@10", "p50 ms", "p95 ms"):
        table.add_column(column)
    for mode, m in report["modes"].items():  # type: ignore[attr-defined]
        table.add_row(
            mode,
            *(f"{m[key]:.4f}" for key in ("ndcg@10", "recall@10", "recall@100", "mrr@10")),
            f"{m['latency_p50_ms']:.1f}",
            f"{m['latency_p95_ms']:.1f}",
        )
    console.print(table)
    if report["reused"]:
        console.print(f"reused the kept tenant {report['tenant']} ({report['documents']} documents)")
    else:
        console.print(f"ingested {report['chunks']} chunks in {report['ingest_seconds']} s")


def _with_resources(work: Callable[[Resources], Awaitable[T]]) -> T:
    """Run ``work`` against the stack's Postgres and Redis; a stack that is not up is one clear line."""

    async def run() -> T:
        from infra.runtime.resources import Resources

        res = await Resources.open(_settings(), lazy_temporal=True)
        try:
            return await work(res)
        finally:
            await res.close()

    try:
        return asyncio.run(run())
    except LookupError as exc:
        console.print(f"[red]✗ {exc.args[0]}[/]")
        raise typer.Exit(1) from exc
    except OSError as exc:
        console.print(f"[red]✗ cannot reach the stack: {exc}[/] (start it with `turnflow up`)")
        raise typer.Exit(1) from exc


@models_app.command("list")
def models_list() -> None:
    """Every model: version, tier, endpoints with their circuit state, canary share, prices, residency,
    and its replies, errors and first-token latency over the last 24 hours."""
    from infra.cli.models import show_models

    _with_resources(lambda res: show_models(res, console))


@models_app.command("promote")
def models_promote(
    name: Annotated[str, typer.Argument(help="a canary model (one with canary_of)")],
    share: Annotated[float, typer.Option(min=0.0, max=1.0, help="its new share of conversations")] = 1.0,
) -> None:
    """Give a canary a larger share of its base model's conversations (all of them by default), now,
    on every worker. To make it permanent, edit temporal.yaml."""
    from infra.cli.models import set_share

    console.print(_with_resources(lambda res: set_share(res, name, share, "promote")))


@models_app.command("rollback")
def models_rollback(name: Annotated[str, typer.Argument(help="a canary model")]) -> None:
    """Send none of the base model's conversations to this canary any more, now, on every worker."""
    from infra.cli.models import set_share

    console.print(_with_resources(lambda res: set_share(res, name, 0.0, "rollback")))


@tenants_app.command("create")
def tenants_create(
    name: Annotated[str, typer.Argument(help="a unique name")],
    residency: Annotated[
        list[str] | None,
        typer.Option(help="a residency tag its models and stores must carry (repeatable), e.g. on-prem"),
    ] = None,
    cost_ceiling: Annotated[
        Decimal | None, typer.Option(help="US dollars per 1k output tokens a model may cost at most")
    ] = None,
    daily_token_budget: Annotated[
        int | None, typer.Option(min=1, help="input + output tokens per UTC day")
    ] = None,
    requests_per_min: Annotated[
        int | None, typer.Option(min=1, help="its rate limit (default: settings)")
    ] = None,
    tokens_per_min: Annotated[int | None, typer.Option(min=1, help="its token rate limit")] = None,
    retention_days: Annotated[int | None, typer.Option(min=1, help="days its transcripts are kept")] = None,
    pii: Annotated[
        list[str] | None,
        typer.Option(
            help="KIND=redact|mask|allow for EMAIL, IBAN, CARD, SSN, NATIONAL_ID, IP, PHONE (repeatable)"
        ),
    ] = None,
) -> None:
    """Create a tenant (or update its policy when it exists)."""
    from activities.logic.pii import check_policy
    from infra.cli.access import ResidencyViolation, create_tenant

    try:
        pii_policy = check_policy(dict(item.split("=", 1) for item in pii or [] if "=" in item))
        done = _with_resources(
            lambda res: create_tenant(
                res,
                name,
                residency or [],
                cost_ceiling,
                daily_token_budget,
                requests_per_min,
                tokens_per_min,
                retention_days,
                pii_policy,
            )
        )
    except (ValueError, ResidencyViolation) as exc:
        console.print(f"[red]✗ {exc}[/]")
        raise typer.Exit(2) from exc
    console.print(done)


@tenants_app.command("list")
def tenants_list() -> None:
    """Every tenant: residency, policy settings and live keys."""
    from infra.cli.access import tenants_table

    console.print(_with_resources(tenants_table))


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="the tenant, by name")],
    scope: Annotated[
        list[str] | None,
        typer.Option(
            help="chat, ingest, admin (all of its tenant) or operator (platform-wide SLOs, drift, "
            "dashboard); repeatable; default chat"
        ),
    ] = None,
    name: Annotated[str, typer.Option(help="what the key is for")] = "cli",
    expires_in_days: Annotated[int | None, typer.Option(min=1, help="default: never")] = None,
) -> None:
    """Create an API key and print it (once: only its hash is stored)."""
    from infra.cli.access import new_key

    try:
        console.print(
            _with_resources(lambda res: new_key(res, tenant, name, scope or ["chat"], expires_in_days)),
            soft_wrap=True,
        )
    except ValueError as exc:
        console.print(f"[red]✗ {exc}[/]")
        raise typer.Exit(2) from exc


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="the key, or its prefix")]) -> None:
    """Revoke a key: the next request with it answers 401."""
    from infra.cli.access import revoke

    console.print(_with_resources(lambda res: revoke(res, key)))


@keys_app.command("list")
def keys_list(tenant: Annotated[str, typer.Option(help="the tenant, by name")]) -> None:
    """A tenant's keys (prefixes, never secrets)."""
    from infra.cli.access import keys_table

    console.print(_with_resources(lambda res: keys_table(res, tenant)))


@app.command()
def replay(
    turn_id: Annotated[str | None, typer.Argument(help="the turn (its X-Turn-ID)")] = None,
    history: Annotated[
        Path | None, typer.Option(help="replay an exported <turn>.history.json instead of fetching it")
    ] = None,
    export_dir: Annotated[
        Path | None, typer.Option("--export", help="write the history and the reconstruction here")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the reconstruction as JSON")] = False,
) -> None:
    """Replay a past turn against the current workflow code and show what it did: input as redacted,
    route, retrieved chunks with versions, the exact prompt, model and version, output, moderation,
    timings. Exit 1 when the recorded decisions are not reproduced."""
    import json

    from infra.cli.replay import export, load_exported, show
    from workers.replay import fetch_history, turn_audit

    if (turn_id is None) == (history is None):
        console.print("[red]✗ name a turn id, or --history FILE[/]")
        raise typer.Exit(2)
    if history is not None and not history.is_file():
        console.print(f"[red]✗ {history}: no such file[/]")
        raise typer.Exit(2)

    async def work(res: Resources) -> tuple[dict[str, object], list[Path]]:
        recorded = load_exported(history) if history else await fetch_history(res, str(turn_id))
        report = await turn_audit(res, recorded)
        return report, export(export_dir, recorded, report) if export_dir else []

    report, files = _with_resources(work)
    if as_json:
        print(json.dumps(report, indent=2, default=str))
    else:
        show(console, report)
    for path in files:
        console.print(f"wrote {path}")
    if not report["replay"]["reproduced"]:  # type: ignore[index]
        raise typer.Exit(1)


@app.command()
def trace(
    turn_id: Annotated[str, typer.Argument(help="the turn (its X-Turn-ID)")],
    as_json: Annotated[bool, typer.Option("--json", help="print the span tree as JSON")] = False,
) -> None:
    """A recent turn's trace from the trace store: API request → workflow → every step → model call,
    database and Redis calls, as a tree with durations (no collector needed)."""
    import json

    from infra.cli.trace import load_trace, show

    found = _with_resources(lambda res: load_trace(res, turn_id))
    if as_json:
        roots = [r.as_dict() for r in found.roots]
        print(json.dumps({"turn_id": turn_id, "trace_id": found.trace_id, "spans": roots}, indent=2))
    else:
        show(console, found)


@app.command()
def slo(
    window: Annotated[
        str | None, typer.Option(help="e.g. 15m, 1h, 7d (default: temporal.yaml's slo.window)")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="one tenant, by name (default: the platform)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON only")] = False,
) -> None:
    """Each objective of temporal.yaml's `slo:` over the window: value, met or not, error budget left.
    Exit 1 when an objective is not met."""
    from infra.cli.slo import show_slo, slo_for
    from infra.config.durations import parse_duration

    try:
        span = parse_duration(window) if window else None
    except (ValueError, OverflowError) as exc:
        console.print(f"[red]✗ --window: {exc}[/]")
        raise typer.Exit(2) from exc
    report = _with_resources(lambda res: slo_for(res, span, tenant))
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        show_slo(console, report)
    if any(o.met is False for o in report.objectives):
        raise typer.Exit(1)


@app.command()
def synth(
    rate: Annotated[float, typer.Option(min=0.01, help="turns per second (Poisson arrivals)")] = 0.3,
    duration: Annotated[
        float, typer.Option(min=1, help="seconds of arrivals (turns under way then finish)")
    ] = 60,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="TURNFLOW_API_KEY", help="a chat+ingest key (default: the demo key)"),
    ] = None,
    api: Annotated[str | None, typer.Option(help="the API's URL (default: this stack's)")] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="reply budget per turn")] = 32,
    max_in_flight: Annotated[int, typer.Option(min=1, help="conversations at once, at most")] = 4,
    seed: Annotated[int, typer.Option(help="the traffic's random seed")] = 7,
) -> None:
    """Synthetic conversational traffic (multi-turn, with retrieval over a small corpus it ingests,
    prompts from a sentence to a paragraph) against a running stack; prints the SLO report at the end."""
    from rich.live import Live

    from db.slo import SloOut
    from infra.cli.slo import show_slo
    from infra.eval.synth import Synth, Tally, percentile

    settings = _settings()
    base = api or f"http://{settings.api_host}:{settings.api_port}"
    key = api_key or _demo_key(settings)

    async def run() -> tuple[Tally, dict[str, object]]:
        traffic = Synth(base, key, max_tokens=max_tokens, max_in_flight=max_in_flight, seed=seed)
        started = time.monotonic()
        try:
            await traffic.ingest_corpus()
            with Live(console=console, transient=True) as live:

                def progress(t: Tally, running: int) -> None:
                    live.update(
                        f"{time.monotonic() - started:5.0f} s  {t.started} turns started, {t.completed} "
                        f"completed, {sum(t.errors.values())} failed, {running} conversations under way"
                    )

                tally = await traffic.run(rate, duration, progress)
            return tally, await traffic.slo(time.monotonic() - started)
        finally:
            await traffic.aclose()

    try:
        tally, report = asyncio.run(run())
    except (httpx.HTTPError, RuntimeError) as exc:
        console.print(f"[red]✗ {exc}[/] (is the stack up? `turnflow up`)")
        raise typer.Exit(1) from exc
    table = Table(title=f"synthetic traffic: {tally.started} turns")
    for column in ("completed", "failed", "TTFT p50 / p95 ms", "turn p50 / p95 ms"):
        table.add_column(column, justify="right")

    def pair(values: list[float]) -> str:
        p50, p95 = percentile(values, 50), percentile(values, 95)
        return "-" if p50 is None or p95 is None else f"{p50:.0f} / {p95:.0f}"

    failed = ", ".join(f"{k}: {v}" for k, v in tally.errors.items()) or "0"
    table.add_row(str(tally.completed), failed, pair(tally.ttft_ms), pair(tally.total_ms))
    console.print(table)
    show_slo(console, SloOut.model_validate(report))


@app.command()
def drift(as_json: Annotated[bool, typer.Option("--json", help="print JSON only")] = False) -> None:
    """Retrieval score distributions and query centroids per tenant, and p95 latency per model version:
    the recent window against its baseline, flagged past temporal.yaml's `drift:`. Exit 1 when flagged."""
    from db.drift import compute_drift
    from infra.cli.slo import show_drift

    report = _with_resources(lambda res: compute_drift(res.sessions, res.policy.drift))
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        show_drift(console, report)
    if report.flagged:
        raise typer.Exit(1)


@app.command()
def retention(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only report what would go")] = False,
) -> None:
    """Run the retention workflow now (it also runs daily): each tenant's expired transcripts go from
    Postgres and Redis. Needs a running stack and worker."""
    import uuid

    from activities.contracts.maintenance import RetentionInput, RetentionReport

    async def work(res: Resources) -> RetentionReport:
        options = res.policy.options_for("retention")
        report: RetentionReport = await res.temporal.execute_workflow(
            "retention",
            RetentionInput(options=options, dry_run=dry_run),
            id=f"retention-manual-{uuid.uuid4().hex[:8]}",
            task_queue=res.policy.queue(res.policy.workflows["retention"].task_queue),
            execution_timeout=options.execution_timeout,
            result_type=RetentionReport,
        )
        return report

    report = _with_resources(work)
    table = Table(title="retention" + (" (dry run: nothing deleted)" if report.dry_run else ""))
    for column in ("tenant", "days", "cutoff", "messages", "conversations", "turn streams"):
        table.add_column(column)
    for t in report.tenants:
        table.add_row(
            t.tenant,
            str(t.retention_days),
            f"{t.cutoff:%Y-%m-%d %H:%M}",
            str(t.messages),
            str(t.conversations),
            str(t.streams),
        )
    console.print(table)
    if report.kept_forever:
        console.print(f"kept (no retention set): {', '.join(report.kept_forever)}")


@codec_app.command("rotate")
def codec_rotate() -> None:
    """Add a new payload key to <data dir>/payload-keys: processes started from now on encrypt with it;
    payloads written with older keys still decrypt. (With TURNFLOW_PAYLOAD_KEYS, put a new key first.)"""
    from infra.runtime.payload_codec import rotate

    settings = _settings()
    if settings.payload_keys:
        console.print("[red]✗ keys come from TURNFLOW_PAYLOAD_KEYS: put the new key first there[/]")
        raise typer.Exit(2)
    key_id = rotate(settings.payload_key_file)
    console.print(
        f"new payload key {key_id} in {settings.payload_key_file}; restart the stack to encrypt with it"
    )


@app.command()
def usage(
    tenant: Annotated[str | None, typer.Option(help="one tenant, by name (default: all)")] = None,
    since: Annotated[datetime | None, typer.Option(help="start, UTC (default: 30 days ago)")] = None,
    until: Annotated[datetime | None, typer.Option(help="end, UTC, exclusive (default: now)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON only")] = False,
) -> None:
    """Replies, tokens, cost and cost per 1k replies per tenant and model, from each reply's record."""
    import json

    from infra.cli.models import usage_rows, usage_table

    end = (until or datetime.now(UTC)).replace(tzinfo=UTC)
    start = (since or end - timedelta(days=30)).replace(tzinfo=UTC)
    rows = _with_resources(lambda res: usage_rows(res, tenant, start, end))
    if as_json:
        keys = ("tenant", "model", "model_version", "messages", "errors", "input_tokens", "output_tokens")
        out = [
            {
                **{k: getattr(r, k) for k in keys},
                "cost_usd": f"{r.cost_usd:f}",
                "cost_per_1k_messages_usd": f"{r.cost_per_1k_messages:f}",
            }
            for r in rows
        ]
        print(json.dumps({"since": start.isoformat(), "until": end.isoformat(), "rows": out}, indent=2))
        return
    console.print(usage_table(rows, start, end))


if __name__ == "__main__":
    app()
