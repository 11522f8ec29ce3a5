"""`turnflow eval` and `turnflow synth`: quality on data sets, synthetic traffic."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from infra.cli.common import console, demo_key_or_exit, settings_or_exit

app = typer.Typer()
eval_app = typer.Typer(help="Evaluate turnflow's quality on data sets.", no_args_is_help=True)


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

    settings = settings_or_exit()
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
    turn_k = report["turn_k"]
    columns = (
        "mode",
        "nDCG@10",
        "recall@10",
        "recall@100",
        "MRR@10",
        f"p50 / p95 ms (k {report['chunk_k']})",
    )
    for column in (*columns, f"p50 / p95 ms (k {turn_k}, as a turn)"):
        table.add_column(column)
    for mode, m in report["modes"].items():  # type: ignore[attr-defined]
        table.add_row(
            mode,
            *(f"{m[key]:.4f}" for key in ("ndcg@10", "recall@10", "recall@100", "mrr@10")),
            f"{m['latency_p50_ms']:.1f} / {m['latency_p95_ms']:.1f}",
            f"{m['turn_latency_p50_ms']:.1f} / {m['turn_latency_p95_ms']:.1f}",
        )
    console.print(table)
    if report["reused"]:
        console.print(f"reused the kept tenant {report['tenant']} ({report['documents']} documents)")
    else:
        console.print(f"ingested {report['chunks']} chunks in {report['ingest_seconds']} s")


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
    from infra.eval.stats import percentile
    from infra.eval.synth import Synth, Tally

    settings = settings_or_exit()
    base = api or f"http://{settings.api_host}:{settings.api_port}"
    key = api_key or demo_key_or_exit(settings)

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
