"""bench/REPORT.md from the newest result of every benchmark in bench/results/: each one's table and
plot, the machine, the date and the commit. `make bench` runs the benchmarks and then this;
`.venv/bin/python -m bench.report` only re-renders what is there.

Over 400 lines because it renders every benchmark: one short function per section, in report order."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import load, slow_consumers
from bench.plotting import pyplot, save

BENCH = Path(__file__).parent
RESULTS = BENCH / "results"
# Results kept in the repository to compare later runs with (bench/results/ is scratch, not committed).
BASELINES = BENCH / "baselines"
REPORT = BENCH / "REPORT.md"
FIGURES = BENCH / "report"  # the report's plots, committed beside it

# Each chaos scenario of the issue, and the test that plays it (run by `make bench`, and by CI).
CHAOS = {
    "a worker process SIGKILLed mid-stream": "test_killed_worker_mid_stream",
    "the API process SIGKILLed mid-stream; the client resumes with Last-Event-ID": (
        "test_killed_api_mid_stream_then_resume"
    ),
    "Redis stopped for 10 s while turns stream": "test_turns_in_flight_complete_across_a_redis_outage",
    "Postgres SIGKILLed (and restarted) while turns stream": (
        "test_turns_in_flight_complete_across_a_postgres_kill"
    ),
    "the model server stopped mid-turn: fallback model": (
        "test_stopped_model_server_falls_back_without_hanging"
    ),
    "no model left: retryable error frame, no hang": "test_no_model_left_gives_a_retryable_error_frame",
    "the Temporal server restarted while turns stream": (
        "test_turns_in_flight_resume_across_a_temporal_restart"
    ),
    "past capacity: 503 overloaded with Retry-After at once": (
        "test_turns_past_capacity_are_refused_at_once_then_admitted"
    ),
    "a turn past its whole-turn timeout: an explicit error recorded": (
        "test_whole_turn_timeout_ends_the_stream_with_an_error"
    ),
    "Postgres down: requests get a retryable 503 naming it": (
        "test_requests_while_postgres_is_down_get_a_retryable_503"
    ),
    "Temporal down: a new turn gets a retryable 503": (
        "test_a_turn_while_temporal_is_down_gets_a_retryable_503"
    ),
}
CHAOS_TESTS = [
    "tests/end_to_end/test_worker_crash.py",
    "tests/end_to_end/test_api_crash.py",
    "tests/end_to_end/test_chaos.py",
    "tests/activities/test_model_failures.py",
    "tests/api/test_backpressure.py",
]


# Where a turn's CPU goes, by process (the load generator is the benchmark's own clients).
CPU_COLUMNS = ("api", "worker", "temporal", "postgres", "redis", "model", "load generator")


def newest(pattern: str) -> Path | None:
    """The newest result of a kind: from this machine's runs (bench/results/, scratch), or a baseline
    kept in the repository (bench/baselines/) that later runs are compared with."""
    found = sorted([*RESULTS.glob(pattern), *BASELINES.glob(pattern)], key=lambda p: p.name)
    return found[-1] if found else None


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def figure(name: str, draw: Callable[[Path], object]) -> str:
    if pyplot() is None:
        return ""
    FIGURES.mkdir(exist_ok=True)
    path = FIGURES / f"{name}.png"
    draw(path)
    return f"![{name}](report/{path.name})"


# --- each benchmark's section ---


def ttft_section(path: Path) -> str:
    r = json.loads(path.read_text())

    def draw(out: Path) -> None:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(7, 3.5))
        levels = [lv["concurrency"] for lv in r["levels"]]
        for who, style in (("turnflow", "-o"), ("direct", "--o")):
            for p in ("p50", "p95"):
                ax.plot(levels, [lv[who]["ttft_ms"][p] for lv in r["levels"]], style, label=f"{who} {p}")
        ax.set(
            xscale="log", yscale="log", xlabel="concurrency", ylabel="TTFT, ms", title="time to first token"
        )
        ax.legend()
        save(fig, out)

    rows = [
        [
            lv["concurrency"],
            f"{ms(lv['turnflow']['ttft_ms']['p50'])} / {ms(lv['turnflow']['ttft_ms']['p95'])}",
            f"{ms(lv['direct']['ttft_ms']['p50'])} / {ms(lv['direct']['ttft_ms']['p95'])}",
            f"{lv['overhead']['ttft_ms']['p50']:.0f} / {lv['overhead']['ttft_ms']['p95']:.0f} ms",
            f"{abs(lv['overhead']['inter_token_ms']['p50']):.1f} ms"
            if abs(lv["overhead"]["inter_token_ms"]["p50"]) < 0.05
            else f"{lv['overhead']['inter_token_ms']['p50']:.1f} ms",
            lv["turnflow"]["events_per_token"],
            f"{lv['turnflow']['errors']} / {lv['turnflow']['n'] + lv['turnflow']['errors']}",
        ]
        for lv in r["levels"]
    ]
    parts = [
        "## Time to first token (`bench/ttft.py`, real model)",
        f"Turnflow's SSE API against the same request sent straight to the model server, interleaved; "
        f"`max_tokens` {r['max_tokens']}. Run {r['date'][:16]} UTC.",
        table(
            [
                "concurrency",
                "TTFT p50 / p95, turnflow",
                "direct",
                "overhead p50 / p95",
                "inter-token overhead p50",
                "events per token",
                "errors",
            ],
            rows,
        ),
        "Targets: overhead p50 ≤ 25 ms and p95 ≤ 60 ms at concurrency 1, p95 ≤ 100 ms at 32; "
        "inter-token overhead p50 ≤ 2 ms; events per token ≥ 0.95.",
        floor_note(r.get("temporal_floor")),
        figure("ttft", draw),
    ]
    return "\n\n".join(part for part in parts if part)


def library_floor_note(floor: dict[str, Any]) -> str:
    """What the libraries under a turn cost for the least work a turn asks of them
    (bench/library_floor.py): the part of the CPU per turn no code built on them goes below."""
    parts = ", ".join(f"{name.replace('_', ' ')} {ms_:.1f}" for name, ms_ in floor["per_part_ms"].items())
    return (
        f"**The libraries' floor** (`bench/library_floor.py`, {floor['date'][:16]} UTC, {floor['users']} "
        f"turns in flight, none of turnflow's code): **{floor['total_ms']:.0f} ms per turn** ({parts} ms): "
        "uvicorn + FastAPI + sse-starlette answering one POST with 34 events, the same events through a "
        "Redis Stream with redis-py, a 32-token stream through huggingface_hub's client, three SQLAlchemy "
        "transactions, and the turn's workflow shape with steps that do nothing. The rest of a turn's "
        "CPU is turnflow's own work and instrumentation."
    )


def floor_note(floor: dict[str, Any] | None) -> str:
    """What Temporal alone costs here (bench/temporal_floor.py, same run and server): the part of the
    overhead no turn whose inference is a workflow activity can go below."""
    if not floor:
        return ""
    a, t = floor["first_activity_ms"], floor["turn_shape_ms"]
    local, prepared = floor.get("local_shape_ms"), floor.get("prepared_shape_ms")
    all_local = (
        f"; the same shape with inference a local activity too (no round trip to the server before the "
        f"first token) **{local['p50']:.0f} / {local['p95']:.0f} ms**"
        if local
        else ""
    )
    if prepared:
        all_local += (
            "; and as turnflow runs it now, one local step before inference instead of four "
            f"(`prepare_turn`) **{prepared['p50']:.0f} / {prepared['p95']:.0f} ms**"
        )
    return (
        f"Temporal's own floor, measured in the same run against the same server (`bench/temporal_floor.py`: "
        "a bare worker, unsandboxed as the chat worker is, eager start, steps that do nothing): "
        "start → first line of an activity "
        f"**{a['p50']:.0f} / {a['p95']:.0f} ms** (p50 / p95); through the turn's shape (three local "
        f"activities side by side, a fourth, then the activity) **{t['p50']:.0f} / {t['p95']:.0f} ms**"
        f"{all_local}. Turnflow's overhead is that, plus the API's checks before the start, the steps' own "
        "work (retrieval, token counting), the payload codec and tracing, and the token's way through Redis."
        + cpu_floor_note(floor)
    )


def cpu_floor_note(floor: dict[str, Any]) -> str:
    """What the turn's shape alone costs in CPU (bench/temporal_floor.py's ``cpu`` series: the prepared
    shape, as turnflow runs it, where measured)."""
    cpu = floor.get("prepared_cpu") or floor.get("cpu")
    if not cpu:
        return ""
    used = cpu["cpu_ms_per_turn"]
    return (
        f" In CPU, the turn's whole shape (every step a local activity, none doing anything) costs "
        f"**{sum(used.values()):.0f} ms per turn** at {cpu['users']} in flight (the SDK's Python and core "
        f"{used.get('worker_and_client', 0):.0f} ms, the Temporal server {used.get('temporal', 0):.0f} ms; "
        f"{cpu['turns_per_s']} turns/s at most on these cores): no turn run as this workflow costs less."
    )


def load_section(path: Path, title: str) -> str:
    r = json.loads(path.read_text())
    rows = [
        [
            lv["users"],
            lv["throughput_turns_per_s"],
            f"{ms(lv['ttft_ms']['p50'])} / {ms(lv['ttft_ms']['p95'])} / {ms(lv['ttft_ms']['p99'])}",
            f"{ms(lv['total_ms']['p50'])} / {ms(lv['total_ms']['p95'])} / {ms(lv['total_ms']['p99'])}",
            (", ".join(f"{k} {v}" for k, v in lv["errors"].items()) or "0") + f" of {lv['turns']}",
            " / ".join(f"{lv['peak_rss_mb'].get(p, 0):.0f}" for p in ("api", "worker", "temporal")),
            " / ".join(f"{lv.get('cpu_ms_per_turn', {}).get(p, 0):.0f}" for p in CPU_COLUMNS),
        ]
        for lv in r["levels"]
    ]
    ratio = r.get("ttft_p50_ratio_32_over_1")
    return "\n\n".join(
        [
            f"## {title}",
            f"{r['duration_s_per_level']:.0f} s of arrivals per level, `max_tokens` {r['max_tokens']}, "
            f"multi-turn conversations with retrieval; {pacing(r)}. Run {r['date'][:16]} UTC.",
            table(
                [
                    "users",
                    "turns/s",
                    "TTFT p50 / p95 / p99",
                    "end to end p50 / p95 / p99",
                    "errors",
                    "peak RSS MB: API / worker / Temporal",
                    "CPU ms per turn: " + " / ".join(CPU_COLUMNS),
                ],
                rows,
            ),
            f"TTFT p50 at 32 users ÷ at 1 user: **{ratio}** (target ≤ 2)." if ratio is not None else "",
            figure(path.stem.rsplit("-", 1)[0], lambda out: load.plot(r, out)),
        ]
    )


MIN_PROFILE_SAMPLES = 100  # a second of Python CPU at py-spy's 100 Hz


def efficiency_section(path: Path) -> str:
    """Issue 17's figures: a turn's platform CPU and throughput now against the same benchmark on the
    code before the change (`efficiency-baseline-*.json`, a `bench/load.py --profile` run kept for
    this), and where each Python process's CPU goes at each profiled level, before and after."""
    after_path = newest("load-fake-2*.json")
    if after_path is None:
        return ""
    before, after = json.loads(path.read_text()), json.loads(after_path.read_text())
    levels_before = {lv["users"]: lv for lv in before["levels"]}
    rows = []
    for lv in json.loads(after_path.read_text())["levels"]:
        old = levels_before.get(lv["users"])
        if old is None:
            continue
        runs = lv.get("runs", [])
        rows.append(
            [
                lv["users"],
                f"{old['throughput_turns_per_s']} → **{lv['throughput_turns_per_s']}**"
                + (
                    f" ({min(r['throughput_turns_per_s'] for r in runs)} to "
                    f"{max(r['throughput_turns_per_s'] for r in runs)})"
                    if runs
                    else ""
                ),
                f"{load.platform_cpu(old):.0f} → **{load.platform_cpu(lv):.0f}**"
                + (
                    f" ({min(r['platform_cpu_ms_per_turn'] for r in runs):.0f} to "
                    f"{max(r['platform_cpu_ms_per_turn'] for r in runs):.0f})"
                    if runs
                    else ""
                ),
                " / ".join(f"{old['cpu_ms_per_turn'].get(p, 0):.0f}" for p in load.PLATFORM),
                " / ".join(f"{lv['cpu_ms_per_turn'].get(p, 0):.0f}" for p in load.PLATFORM),
                f"{ms(old['ttft_ms']['p50'])} → {ms(lv['ttft_ms']['p50'])}",
            ]
        )
    parts = [
        "## Turn efficiency: before and after (issue 17)",
        f"`bench/load.py --model fake --profile` on the code before ({before['date'][:16]} UTC) and now "
        f"({after['date'][:16]} UTC), same machine. Platform CPU is API + worker + Temporal + Postgres "
        "+ Redis, per completed turn. Targets: ≤ 120 ms at 1 user, ≤ 90 ms and ≥ 18 turns/s at 32. "
        "Where a level ran more than once (`--repeats`), its row is the run of median CPU, with the "
        "range of all its runs in brackets (lowest to highest): runs on this shared machine differ by "
        "up to a fifth.",
        table(
            [
                "users",
                "turns/s",
                "platform CPU ms per turn",
                "before: " + " / ".join(load.PLATFORM),
                "now: " + " / ".join(load.PLATFORM),
                "TTFT p50",
            ],
            rows,
        ),
    ]
    if floor_path := newest("library-floor-*.json"):
        parts.append(library_floor_note(json.loads(floor_path.read_text())))
    for lv in after["levels"]:
        old = levels_before.get(lv["users"], {})
        for process, prof in lv.get("profile", {}).items():
            was = old.get("profile", {}).get(process, {})
            if prof.get("samples", 0) < MIN_PROFILE_SAMPLES:
                continue  # hardly ran at this level (1 user: the API's eager worker ran it all)
            groups = ", ".join(f"{name} {pct}%" for name, pct in prof.get("self_by_group_pct", [])[:8])
            was_groups = ", ".join(f"{name} {pct}%" for name, pct in was.get("self_by_group_pct", [])[:8])
            parts.append(
                f"**{process}, {lv['users']} user{'s' if lv['users'] != 1 else ''}** "
                f"(py-spy, Python CPU by what it ran): now {groups}"
                + (f"; before {was_groups}" if was_groups else "")
                + "."
            )
    return "\n\n".join(parts)


def pacing(r: dict[str, Any]) -> str:
    think = r.get("think_s") or 0
    users = (
        f"each user pauses {think:g} s on average (exponential) before each turn"
        if think
        else "each user sends its next turn as soon as a reply ends (a capacity test)"
    )
    token_ms = r.get("fake_token_ms")
    return users + (f"; the fake model streams a token every {token_ms:g} ms" if token_ms else "")


def failover_section(path: Path) -> str:
    r = json.loads(path.read_text())

    def draw(out: Path) -> None:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(9, 3.5))
        for outcome, marker in (("done", "o"), ("error", "x")):
            turns = [t for t in r["timeline"] if (t["outcome"] == "done") == (outcome == "done")]
            models = (("primary", "tab:blue"), ("fallback", "tab:orange"), ("extractive", "tab:green"))
            for model, color in (*models, (None, "tab:red")):
                mine = [t for t in turns if t["model"] == model]
                if mine:
                    ax.scatter(
                        [t["started_s"] for t in mine],
                        [t["latency_ms"] for t in mine],
                        marker=marker,
                        color=color,
                        label=f"{outcome} ({model or 'none'})",
                        s=14,
                    )
        ax.axvline(r["killed_at_s"], color="red", linestyle="--", label="primary killed")
        ax.axvline(r["restarted_at_s"], color="green", linestyle="--", label="restarted")
        if (down := r.get("all_down") or {}).get("from_s") is not None:
            ax.axvspan(down["from_s"], down["to_s"], color="grey", alpha=0.2, label="every server down")
        ax.set(xlabel="s since start", ylabel="turn latency, ms", yscale="log", title="failover timeline")
        ax.legend(fontsize=7)
        save(fig, out)

    row = [
        r["turns"],
        f"**{r['failed']}**",
        f"{r['served_by']['primary']} / {r['served_by']['fallback']}",
        r["turns_with_reset"],
        f"{ms(r['normal_ms']['p50'])} / {ms(r['normal_ms']['p95'])}",
        f"{ms(r['outage_ms']['p50'])} / {ms(r['outage_ms']['p95'])}",
        f"**{r['p95_outage_over_normal']}**",
        f"{r['recovered_after_restart_s']} s",
    ]
    down = r.get("all_down") or {}
    if down.get("from_s") is not None:
        row.append(
            f"{down['answered_from_sources']} of {down['turns']} ({down['failed']} failed);"
            f" {r['answered_from_sources']} in the whole run"
        )
    return "\n\n".join(
        [
            "## Failover (`bench/failover.py`, two real model servers)",
            f"One turn per {1 / r['rate_per_s']:.0f} s for {r['duration_s']:.0f} s; the primary's server "
            f"SIGKILLed at {r['killed_at_s']} s and restarted at {r['restarted_at_s']} s. "
            f"Run {r['date'][:16]} UTC.",
            table(
                [
                    "turns",
                    "failed",
                    "served by primary / fallback",
                    "turns with a reset",
                    "before p50 / p95",
                    "outage p50 / p95",
                    "p95 outage ÷ before",
                    "primary back after restart",
                    *(
                        ["every server down: answered from the sources"]
                        if down.get("from_s") is not None
                        else []
                    ),
                ],
                [row],
            ),
            "Targets: 0 failed turns with a fallback configured; p95 during the outage ≤ 2x before."
            + (
                f" From {down['from_s']:g} s to {down['to_s']:g} s both servers were down: the tenant has a"
                ' document, so those turns were answered from it (`degraded: "extractive"`).'
                if down.get("from_s") is not None
                else ""
            ),
            figure("failover", draw),
        ]
    )


def slow_consumers_section(path: Path) -> str:
    r = json.loads(path.read_text())
    rows = [
        [
            p["phase"],
            p["streams"],
            f"{ms(p['server_latency_ms']['p50'])} / {ms(p['server_latency_ms']['p95'])}",
            f"{p['complete']} / {p['streams']}",
            p["stream_mb"],
            f"{p['rss_growth_mb']['api']} / {p['rss_growth_mb']['worker']}",
            p["redis_growth_mb"],
            p["max_stream_entries"],
        ]
        for p in r["phases"]
    ]
    return "\n\n".join(
        [
            "## Slow consumers (`bench/slow_consumers.py`, FAKE fast model)",
            f"{r['streams']} concurrent turns of {r['tokens_per_turn']} tokens "
            f"({r['token_chars']} characters each). *Reading*: every client reads as fast as events "
            f"come. *Stalled*: every client (receive buffer {r['stalled_client_rcvbuf'] // 1024} KiB) "
            f"reads up to its first token, then nothing "
            f"until the turn is recorded, then drops the connection and resumes with `Last-Event-ID`. "
            f"Run {r['date'][:16]} UTC.",
            table(
                [
                    "phase",
                    "streams",
                    "server-side turn latency p50 / p95",
                    "resumed complete (every token once)",
                    "MB streamed",
                    "RSS growth MB: API / worker",
                    "Redis growth MB",
                    "longest turn stream (entries)",
                ],
                rows,
            ),
            f"Server-side latency p50, stalled ÷ reading: **{r['server_latency_p50_stalled_over_reading']}** "
            f"(1.0: a client that stops reading costs the worker nothing). Each turn's stream is capped at "
            f"{r['stream_max_entries']:,} entries (approximate trim) and expires after the retention window; "
            f"the API reads a client's events from Redis only as fast as the client takes them.",
            figure("slow-consumers", lambda out: slow_consumers.plot(r, out)),
        ]
    )


def retrieval_section(path: Path) -> str:
    r = json.loads(path.read_text())
    scenarios = ("unfiltered", "tenant_1pct", "unsatisfiable", "hybrid_tenant")
    rows = []
    for name, o in r["options"].items():
        cells = [name, o["build_seconds"]]
        for s in scenarios:
            v = o.get(s)
            recall = f", recall {v['recall@10']:.3f}" if v and "recall@10" in v else ""
            cells.append(f"{v['p50_ms']:.2f} / {v['p95_ms']:.2f}{recall}" if v else "-")
        rows.append(cells)

    def draw(out: Path) -> None:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(8, 3.5))
        names = list(r["options"])
        width = 0.8 / len(scenarios)
        for i, s in enumerate(scenarios):
            ax.bar(
                [x + i * width for x in range(len(names))],
                [r["options"][n].get(s, {}).get("p95_ms", 0) for n in names],
                width,
                label=s,
            )
        ax.set(
            xticks=[x + 0.4 - width / 2 for x in range(len(names))],
            xticklabels=names,
            ylabel="p95 ms",
            title=f"vector search, {r['rows']:,} chunks over {r['tenants']} tenants",
        )
        ax.legend(fontsize=7)
        save(fig, out)

    ingest = r.get("ingestion")
    return "\n\n".join(
        [
            "## Retrieval (`bench/retrieval.py`)",
            f"{r['rows']:,} synthetic 384-d chunks over {r['tenants']} tenants, {r['queries']} queries, "
            f"k = {r['k']}; latency p50 / p95 in ms (recall@10 against exact search). "
            f"Run {r['date'][:16]} UTC. "
            "Quality on SciFact and the 100k/1M runs: [RETRIEVAL.md](RETRIEVAL.md).",
            table(["index", "build s", *scenarios], rows),
            f"Ingestion: {ingest['chunks_per_second']} chunks/s, embedding included." if ingest else "",
            figure("retrieval", draw),
        ]
    )


def tenant_scale_section(path: Path) -> str:
    r = json.loads(path.read_text())
    once = "hybrid_8_at_once"
    rows = []
    for level in r["levels"]:
        cells: list[Any] = [f"{level['chunks']:,}"]
        for mode in ("hybrid", "vector", "text"):
            v = level[mode]
            cells.append(f"{v['p50_ms']:.1f} / {v['p95_ms']:.1f} / {v['p99_ms']:.1f}")
        if once in level:
            v = level[once]
            cells.append(
                f"{v['p50_ms']:.0f} / {v['p95_ms']:.0f} / {v['p99_ms']:.0f}, {v['over_deadline']} over"
            )
        rows.append(cells)
    parts = [
        "## Retrieval at tenant scale (`bench/tenant_scale.py`, issue 18)",
        f"One tenant: SciFact as ingested, then with near-copies of its chunks up to ~100k. Each search as a "
        f"chat turn asks it (k = {r['turn_k']}, {r['candidates']} candidates per method), cold: the "
        f"question embedded anew, no result cache; {r['queries']} {r['split']} queries; ms p50 / p95 / p99. "
        f"The retrieve step's deadline is {r['retrieve_deadline_ms']:.0f} ms. Run {r['date'][:16]} UTC.",
        table(["chunks", "hybrid", "vector only", "BM25 only", "hybrid, 8 at once"], rows),
    ]
    quality = newest("eval-scifact-test-*.json")
    if quality is not None:
        q = json.loads(quality.read_text())
        qrows = [
            [
                mode,
                m["ndcg@10"],
                m["recall@10"],
                m["recall@100"],
                f"{m['latency_p50_ms']:.1f} / {m['latency_p95_ms']:.1f}",
            ]
            for mode, m in q["modes"].items()
        ]
        parts += [
            f"Quality (`turnflow eval retrieval`, SciFact test split, {q['queries']} claims; tuned on "
            f"the train split only), latency at k = {q['chunk_k']}:",
            table(["mode", "nDCG@10", "recall@10", "recall@100", "p50 / p95 ms"], qrows),
        ]
    return "\n\n".join(parts)


def tenant_turns_section(path: Path) -> str:
    """The newest whole-turn run per model server (the embedded CPU model, and the FAKE fast one)."""
    runs: dict[str, dict[str, Any]] = {}
    for found in sorted(path.parent.glob("tenant-turns-*.json")):
        r = json.loads(found.read_text())
        runs[r["model_server"]] = r
    rows = [
        [
            server,
            f"{r['chunks']:,}",
            r["users"],
            f"{r['completed']} / {r['turns']}",
            r["degraded"],
            sum(r["errors"].values()),
            r["throughput_turns_per_s"],
            f"{ms(r['ttft_ms']['p50'])} / {ms(r['ttft_ms']['p95'])}",
            r["date"][:16],
        ]
        for server, r in runs.items()
    ]
    return "\n\n".join(
        [
            "## Whole turns on the large tenant (`bench/tenant_turns.py`, issue 18)",
            "Concurrent users ask SciFact's test claims as chat turns through the API; every turn retrieves "
            "from the 12k-chunk tenant. Degraded: answered without context because retrieval failed or "
            "missed the retrieve step's deadline (the turn's own event says). The embedded model "
            "saturates the two cores itself (a turn waits seconds for its slot); the FAKE one lets the "
            "platform run as many turns as the CPUs allow.",
            table(
                [
                    "model server",
                    "chunks",
                    "users",
                    "completed / turns",
                    "degraded",
                    "errors",
                    "turns/s",
                    "TTFT p50 / p95",
                    "run (UTC)",
                ],
                rows,
            ),
        ]
    )


def sealing_section(path: Path) -> str:
    r = json.loads(path.read_text())
    mine = r["in_process"]
    shape = mine["shape"]
    parts = [
        "## Encryption at rest: its cost per turn (`bench/sealing.py`)",
        f"Every seal and open of one turn's text (activities/adapters/sealed_text.py), in one process: "
        f"{mine['operations_per_turn']} operations for {shape['tokens']} tokens (each event sealed by the "
        f"worker, opened by the API), {shape['candidates']} retrieval candidates of {shape['chunk_chars']} "
        f"characters opened, a {shape['history']}-message history opened, the exchange sealed for Postgres "
        f"and Redis: **{mine['cpu_ms_per_turn']['p50']:.2f} ms** CPU p50 "
        f"({mine['cpu_ms_per_turn']['p95']:.2f} ms p95) over {mine['repetitions']} turns. "
        f"Run {r['date'][:16]} UTC.",
    ]
    if r.get("load"):
        off, on = ({lv["users"]: lv for lv in r["load"][k]} for k in ("off", "on"))
        rows = []
        for users in sorted(off.keys() & on.keys()):
            a, b = off[users], on[users]
            cpu_a, cpu_b = (
                sum(v for k, v in x["cpu_ms_per_turn"].items() if k != "load generator") for x in (a, b)
            )
            rows.append(
                [
                    users,
                    f"{a['throughput_turns_per_s']} / {b['throughput_turns_per_s']}",
                    f"{ms(a['ttft_ms']['p50'])} / {ms(b['ttft_ms']['p50'])}",
                    f"{cpu_a:.0f} / {cpu_b:.0f} ({cpu_b - cpu_a:+.0f})",
                    f"{sum(a['errors'].values())} / {sum(b['errors'].values())}",
                ]
            )
        parts += [
            "The whole platform, sealing off then on (`bench/load.py --model fake`, each on a stack of "
            "its own, in the same run):",
            table(
                [
                    "users",
                    "turns/s off / on",
                    "TTFT p50 off / on",
                    "platform CPU ms per turn off / on",
                    "errors",
                ],
                rows,
            ),
            "Platform CPU is every stack process but the load generator. The two stacks run one after "
            "the other on the same two cores, so their difference also holds the run-to-run noise "
            "(about ±10% here); the in-process figure above is the cost of sealing itself.",
        ]
    return "\n\n".join(parts)


def rollout_section(path: Path) -> str:
    r = json.loads(path.read_text())
    t, pg, phases = r["turns"], r["postgres"], r["ttft_ms"]
    before_p95 = phases["before"]["p95"] or 0
    during_p95 = phases["during"]["p95"] or 0
    ratio = during_p95 / before_p95 if before_p95 else None
    drains = ", ".join(f"{d['process']} {d['seconds']:.1f} s" for d in r["drains"])
    return "\n\n".join(
        [
            "## Rolling deploy under load (`bench/rollout.py`)",
            f"{r['users']} conversations over 2 API processes (~{t['turns_per_s']} turns/s, FAKE fast "
            "model), 2 workers of build A; then 2 workers of build B, B ramped to 50 %, made current, "
            "the A workers SIGTERMed one at a time, each API restarted on B, and a rollback to A "
            f"(its workers started again). {r['seconds']:.0f} s in all. Run {r['date'][:16]} UTC.",
            table(
                [
                    "started",
                    "completed",
                    "failed",
                    "lost",
                    "reply missing / duplicated (Postgres)",
                    "events seen twice",
                    "streams resumed",
                    "mixed-build turns",
                ],
                [
                    [
                        t["started"],
                        t["completed"],
                        t["failed"],
                        t["lost"],
                        f"{pg['missing_reply']} / {pg['duplicated_reply']}",
                        t["duplicate_events"],
                        t["resumed_streams"],
                        f"**{r['mixed_build_turns']}**",
                    ]
                ],
            ),
            table(
                ["phase", "turns", "TTFT p50 / p95"],
                [[name, p["turns"], f"{ms(p['p50'])} / {ms(p['p95'])}"] for name, p in phases.items()],
            ),
            f"TTFT p95 during the rollout ÷ before: **{ratio:.2f}** (target ≤ 1.5). "
            f"Turns per build: {r['turns_per_build']}. Drains (SIGTERM to exit): {drains}."
            if ratio is not None
            else "",
            rollout_steps(r),
        ]
    )


def rollout_steps(r: dict[str, Any]) -> str:
    """When the operator's steps fell, how long routing changes took to reach the task queues, and
    the turns that waited longest (where, in their histories)."""
    steps = ", ".join(f"{name} {round(at) or 0} s" for name, at in r.get("steps_s", []))
    settled = [float(x) for said in r.get("operator_saw", []) for x in re.findall(r"in\s+([\d.]+)\s+s", said)]
    slow = r.get("slow_turns", [])
    lines = [f"Steps (seconds after the start): {steps}."] if steps else []
    if settled:
        lines.append(
            f"Each routing change reached its task queues in {min(settled):.1f} to {max(settled):.1f} s "
            "(`turnflow deploy` waits for that, and first for the build's workers to poll now). "
            f"Turns with a first token after more than 2 s: {len(slow)}."
        )
    return " ".join(lines)


def chaos_section(path: Path) -> str:
    cases = {case.get("name", ""): case for case in ET.parse(path).getroot().iter("testcase")}
    rows = []
    for scenario, test in CHAOS.items():
        case = cases.get(test)
        if case is None:
            rows.append([scenario, f"`{test}`", "not run", "-"])
            continue
        failed = case.find("failure") is not None or case.find("error") is not None
        skipped = case.find("skipped") is not None
        outcome = "**failed**" if failed else "skipped" if skipped else "passed"
        rows.append([scenario, f"`{test}`", outcome, f"{float(case.get('time', 0)):.1f} s"])
    return "\n\n".join(
        [
            "## Chaos scenarios (pytest, real services)",
            "Each scenario runs while turns stream and then checks the database: every accepted message "
            "has exactly one reply, or an explicit error, recorded. CI runs the same tests. "
            f"Run {datetime.fromtimestamp(path.stat().st_mtime, UTC):%Y-%m-%d %H:%M} UTC.",
            table(["scenario", "test", "outcome", "time"], rows),
        ]
    )


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    mem_kb = next(
        (
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=BENCH, check=False
    ).stdout.strip()
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem_kb / 2**20:.0f} GiB memory, no GPU; {platform.platform()}; "
        f"Python {platform.python_version()}; commit {commit or 'unknown'}. Everything runs on this one "
        "machine: Temporal dev server, Postgres, Redis, model servers, API, worker and the load generator."
    )


def ws_load_section(path: Path) -> str:
    r = json.loads(path.read_text())
    rows = [
        [
            f"{lv['most_held_at_once']} of {lv['users']}",
            f"{lv['turns']} / {lv['completed']}",
            sum(lv["errors"].values()) or 0,
            f"{ms(lv['ttft_ms']['p50'])} / {ms(lv['ttft_ms']['p95'])}",
            f"{ms(lv['total_ms']['p50'])} / {ms(lv['total_ms']['p95'])}",
            f"{lv['peak_rss_mb'].get('api')} / {lv['peak_rss_mb'].get('worker')}",
            " / ".join(str(lv["cpu_ms_per_turn"].get(p, "-")) for p in ("api", "worker")),
        ]
        for lv in r["levels"]
    ]
    return "\n\n".join(
        [
            "## WebSocket users (`bench/load.py --transport ws`, FAKE fast model)",
            f"Each user holds one socket on `/v1/ws` for the whole level ({r['duration_s_per_level']:g} s),"
            f" asking a turn of {r['max_tokens']} tokens, pausing (mean {r['think_s']:g} s) and asking again"
            f" in the same conversation. Run {r['date'][:16]} UTC.",
            table(
                [
                    "sockets held at once",
                    "turns / completed",
                    "errors",
                    "TTFT p50 / p95",
                    "turn p50 / p95",
                    "peak RSS MB: API / worker",
                    "CPU ms a turn: API / worker",
                ],
                rows,
            ),
        ]
    )


def response_cache_section(path: Path) -> str:
    r = json.loads(path.read_text())
    rows = [
        [
            name,
            n,
            f"{ms(kind['ttft_ms']['p50'])} / {ms(kind['ttft_ms']['p95'])}",
            f"{ms(kind['total_ms']['p50'])} / {ms(kind['total_ms']['p95'])}",
        ]
        for name, n, kind in (
            ("cache hit", r["hits"], r["hit"]),
            ("model turn (real llama.cpp)", r["repeats"], r["model_turn"]),
        )
    ]
    return "\n\n".join(
        [
            "## Response cache: a hit against a model turn (`bench/response_cache.py`, real model)",
            f"{r['questions']} deterministic questions (temperature 0, {r['max_tokens']} tokens) asked"
            f" once each (misses, then cached), then again interleaved with {r['repeats']} new ones,"
            f" each in a new conversation, over SSE: {r['hits']} of {r['repeats']} repeats were hits."
            f" TTFT p50 of a model turn over a hit's: **{r['ttft_p50_model_over_hit']}x**."
            f" Run {r['date'][:16]} UTC.",
            table(["turns", "n", "TTFT p50 / p95", "end to end p50 / p95"], rows),
        ]
    )


SECTIONS: list[tuple[str, Callable[[Path], str]]] = [
    ("chaos-*.xml", chaos_section),
    ("ttft-*.json", ttft_section),
    # (load-fake-2026...: timestamps follow the model at once; paced runs say `-think…` first.)
    (
        "load-fake-2*.json",
        lambda p: load_section(p, "Capacity, FAKE fast model (`bench/load.py --model fake`)"),
    ),
    (
        "load-fake-think*.json",
        lambda p: load_section(p, "Load, users who pause between turns, FAKE model at a real pace"),
    ),
    ("load-real-*.json", lambda p: load_section(p, "Load, real model (`bench/load.py --model real`)")),
    ("efficiency-baseline-*.json", efficiency_section),
    ("slow-consumers-*.json", slow_consumers_section),
    ("ws-load-*.json", ws_load_section),
    ("response-cache-*.json", response_cache_section),
    ("sealing-*.json", sealing_section),
    ("rollout-*.json", rollout_section),
    ("failover-*.json", failover_section),
    ("retrieval-*.json", retrieval_section),
    ("tenant-scale-*.json", tenant_scale_section),
    ("tenant-turns-*.json", tenant_turns_section),
]


def previous_sections() -> dict[str, str]:
    """The report's sections as last written, by heading: bench/results/ is scratch, so a section
    whose result this machine does not have is kept as it was (with the date of its own run)."""
    if not REPORT.exists():
        return {}
    found = {}
    for part in REPORT.read_text().split("\n\n## ")[1:]:
        heading, _, _ = part.partition("\n")
        # Less what the report said about itself at the end (its own list of kept sections).
        body = "\n\n".join(p for p in part.split("\n\n") if not p.startswith(("Kept from", "Not run:")))
        found[heading] = "## " + body.strip()
    return found


def render() -> Path:
    sections = previous_sections()
    kept = set(sections)
    for pattern, section in SECTIONS:
        if (path := newest(pattern)) is not None and (text := section(path)):
            heading = text.removeprefix("## ").partition("\n")[0]
            sections[heading] = text  # in place when the report had it, else at the end
            kept.discard(heading)
    parts = [
        "# turnflow benchmark report",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `make bench` (re-render: "
        "`.venv/bin/python -m bench.report`).\n\n" + f"**Machine**: {machine()}",
        *sections.values(),
    ]
    if kept:
        parts.append(
            "Kept from the previous report (no result for them on this machine): "
            + ", ".join(kept_heading.split(" (")[0] for kept_heading in sections if kept_heading in kept)
            + "."
        )
    REPORT.write_text("\n\n".join(p for p in parts if p) + "\n")
    return REPORT


def main() -> None:
    print(f"wrote {render()}", file=sys.stderr)


if __name__ == "__main__":
    main()
