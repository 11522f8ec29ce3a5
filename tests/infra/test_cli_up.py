"""`turnflow up` as a user runs it: the whole stack, healthy; status, down, Ctrl-C; no orphans; data kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psycopg
import pytest

from infra.stack.state import pid_alive, read_state
from tests.support.services import free_port

pytestmark = pytest.mark.timeout(600)

TURNFLOW = [sys.executable, "-m", "infra.cli.main"]


def stack_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TURNFLOW_")}
    env.update(
        TURNFLOW_DATA_DIR=str(data_dir),
        TURNFLOW_API_PORT=str(free_port()),
        TURNFLOW_TEMPORAL_PORT=str(free_port()),
        TURNFLOW_TEMPORAL_UI_PORT=str(free_port()),
        TURNFLOW_TEMPORAL_HTTP_PORT=str(free_port()),
        TURNFLOW_TEMPORAL_METRICS_PORT=str(free_port()),
        TURNFLOW_POSTGRES_PORT=str(free_port()),
        TURNFLOW_REDIS_PORT=str(free_port()),
        TURNFLOW_MODEL_PORT=str(free_port()),
        TURNFLOW_WORKER_METRICS_PORT=str(free_port()),
        COLUMNS="200",
    )
    return env


class Up:
    """A running `turnflow up` whose output is collected into a file."""

    def __init__(self, env: dict[str, str], out: Path) -> None:
        self.env = env
        self.out = out
        self.proc = subprocess.Popen(
            [*TURNFLOW, "up"],
            env=env,
            stdout=out.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def text(self) -> str:
        return self.out.read_text()

    def wait_for(self, needle: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            if self.proc.poll() is not None:
                raise AssertionError(f"turnflow up exited {self.proc.returncode}:\n{self.text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {needle!r} after {timeout}s:\n{self.text()}")
            time.sleep(0.2)

    def api(self) -> str:
        return f"http://127.0.0.1:{self.env['TURNFLOW_API_PORT']}"


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TURNFLOW, *args], env=env, capture_output=True, text=True, timeout=200)


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            if text in cmd:
                found.append(f"{entry.name}: {cmd}")
    return found


def wait_gone(pids: list[int], timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while (alive := [p for p in pids if pid_alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


class OtlpCollector(ThreadingHTTPServer):
    """Stands in for an OpenTelemetry collector: keeps what is POSTed to /v1/traces and /v1/metrics."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                collector.received.append((self.path, body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def test_up_serves_a_healthy_stack_then_stops_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = stack_env(data)
    collector = OtlpCollector()
    env["TURNFLOW_OTLP_ENDPOINT"] = collector.url
    up = Up(env, tmp_path / "up.out")
    try:
        up.wait_for("Press Ctrl-C to stop.")
        out = up.text()
        for name in ("temporal", "postgres", "redis", "model", "worker", "api"):
            assert f"✓ {name} ready" in out
        assert "Temporal web UI" in out and f"{up.api()}/docs" in out

        health = httpx.get(f"{up.api()}/healthz", timeout=20)
        assert health.status_code == 200, health.text
        assert {c["status"] for c in health.json()["components"].values()} == {"ok"}
        ui = httpx.get(f"http://127.0.0.1:{env['TURNFLOW_TEMPORAL_UI_PORT']}/", timeout=10)
        assert ui.status_code == 200
        # Prometheus reads the API and each worker; the worker's includes the Temporal SDK's own
        # metrics (its pollers report from the start).
        worker_metrics = f"http://127.0.0.1:{env['TURNFLOW_WORKER_METRICS_PORT']}/metrics"
        assert worker_metrics in out
        scraped = httpx.get(worker_metrics, timeout=10)
        assert scraped.status_code == 200 and "temporal_" in scraped.text, scraped.text[:500]
        assert httpx.get(f"{up.api()}/metrics", timeout=10).status_code == 200

        status = run_cli(env, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        for name in ("temporal", "postgres", "redis", "model", "worker"):
            assert name in status.stdout

        probe = run_cli(env, "doctor", "--probe")
        assert probe.returncode == 0, probe.stdout
        assert "✓ stack probe: audit row" in probe.stdout

        # The demo tenant's key: written owner-only, named in the output, and it opens the API.
        key_file = data / "demo-api-key"
        assert key_file.stat().st_mode & 0o777 == 0o600 and f"$(cat {key_file})" in out
        demo = {"Authorization": f"Bearer {key_file.read_text().strip()}"}
        assert (
            httpx.post(f"{up.api()}/v1/conversations", json={}, headers=demo, timeout=10).status_code == 201
        )
        assert httpx.post(f"{up.api()}/v1/conversations", json={}, timeout=10).status_code == 401
        # With a collector configured, the API's spans are exported to it over OTLP/HTTP (protobuf).
        deadline = time.monotonic() + 20
        while not any(path == "/v1/traces" and b"turnflow-api" in body for path, body in collector.received):
            assert time.monotonic() < deadline, [path for path, _ in collector.received]
            time.sleep(0.5)

        # A tenant whose residency this stack's stores cannot meet is not created (they are on-prem).
        refused = run_cli(env, "tenants", "create", "eu-only", "--residency", "eu")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        said = " ".join(refused.stdout.split())  # rich may wrap the line
        assert "postgres lacks eu" in said and "embedder lacks eu" in said
        assert "eu-only" not in run_cli(env, "tenants", "list").stdout
        # Operators make tenants and keys; a revoked key stops working at once.
        made = run_cli(
            env,
            "tenants",
            "create",
            "acme",
            "--residency",
            "on-prem",
            "--retention-days",
            "30",
            "--requests-per-min",
            "50",
        )
        assert made.returncode == 0 and "acme" in made.stdout, made.stdout + made.stderr
        created = run_cli(env, "keys", "create", "--tenant", "acme", "--scope", "chat", "--name", "app")
        assert created.returncode == 0, created.stdout + created.stderr
        key = created.stdout.split()[0]
        acme = {"Authorization": f"Bearer {key}"}
        conv = httpx.post(f"{up.api()}/v1/conversations", json={}, headers=acme, timeout=10)
        assert conv.status_code == 201
        # Another tenant's conversation does not exist for the demo key.
        other = httpx.get(f"{up.api()}/v1/conversations/{conv.json()['id']}", headers=demo, timeout=10)
        assert other.status_code == 404
        listed = run_cli(env, "tenants", "list")
        assert (
            "acme" in listed.stdout and "on-prem" in listed.stdout and "requests_per_min=50" in listed.stdout
        )
        assert run_cli(env, "keys", "revoke", key).returncode == 0
        retention = run_cli(env, "retention", "--dry-run")
        assert retention.returncode == 0 and "acme" in retention.stdout and "dry run" in retention.stdout
        assert (
            httpx.post(f"{up.api()}/v1/conversations", json={}, headers=acme, timeout=10).status_code == 401
        )

        # A second `up` on the same data dir is refused, and says why.
        again = run_cli(env, "up")
        assert again.returncode == 1 and "already running" in again.stdout

        state = read_state(data)
        assert state is not None
        pids = list(state.pids.values())
        assert len(pids) == 6

        up.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert up.proc.wait(timeout=90) == 0, up.text()
        assert "stopped." in up.text()
        assert wait_gone(pids) == []
        assert processes_mentioning(str(data)) == []
        assert read_state(data) is None
    finally:
        if up.proc.poll() is None:
            os.killpg(up.proc.pid, signal.SIGKILL)

    # Restarting keeps data: the probe's audit row is still in Postgres; `down` stops it from outside.
    up = Up(env, tmp_path / "up2.out")
    try:
        up.wait_for("Press Ctrl-C to stop.")
        password = (data / "postgres.password").read_text()
        with psycopg.connect(
            host="127.0.0.1",
            port=env["TURNFLOW_POSTGRES_PORT"],
            user="turnflow",
            password=password,
            dbname="turnflow",
        ) as conn:
            row = conn.execute("SELECT count(*) FROM audit_events WHERE action='stack.probe'").fetchone()
        assert row is not None and row[0] >= 1
        down = run_cli(env, "down")
        assert down.returncode == 0 and "stopped." in down.stdout
        assert up.proc.wait(timeout=60) == 0
        assert processes_mentioning(str(data)) == []
    finally:
        if up.proc.poll() is None:
            os.killpg(up.proc.pid, signal.SIGKILL)


def test_killed_supervisor_leaves_no_orphans(tmp_path: Path) -> None:
    data = tmp_path / "data"
    up = Up(stack_env(data), tmp_path / "up.out")
    try:
        up.wait_for("Press Ctrl-C to stop.")
        state = read_state(data)
        assert state is not None
        pids = list(state.pids.values())
        os.kill(up.proc.pid, signal.SIGKILL)
        up.proc.wait(timeout=10)
        assert wait_gone(pids) == []
        assert processes_mentioning(str(data)) == []
    finally:
        if up.proc.poll() is None:
            os.killpg(up.proc.pid, signal.SIGKILL)


def test_component_that_cannot_start_gives_one_clear_line(tmp_path: Path) -> None:
    import socket

    env = stack_env(tmp_path / "data")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(env["TURNFLOW_REDIS_PORT"])))
        squatter.listen()
        result = subprocess.run([*TURNFLOW, "up"], env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 1
    assert f"✗ redis: port {env['TURNFLOW_REDIS_PORT']} is already in use" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert processes_mentioning(str(tmp_path / "data")) == []


def test_bad_policy_file_is_refused_with_path_and_reason(tmp_path: Path) -> None:
    bad = tmp_path / "temporal.yaml"
    bad.write_text("namespace: default\ntask_queues: {chat: q}\nactivities: {a: {start_to_close: soon}}\n")
    env = {**stack_env(tmp_path / "data"), "TURNFLOW_POLICY_FILE": str(bad)}
    up = run_cli(env, "up")
    assert up.returncode == 2
    assert f"✗ {bad}: activities.a.start_to_close: Value error, not a duration" in up.stdout.replace("\n", "")
    # doctor goes on through every check, marks this one failed, and exits non-zero.
    doctor = run_cli(env, "doctor")
    assert doctor.returncode == 1
    assert f"✗ policy: {bad}: activities.a.start_to_close" in doctor.stdout.replace("\n", "")
    assert "✓ python" in doctor.stdout


def test_missing_model_file_is_one_clear_line_in_up_and_doctor(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model.gguf"
    env = {**stack_env(tmp_path / "data"), "TURNFLOW_MODEL_PATH": str(missing)}
    up = run_cli(env, "up")
    assert up.returncode == 1
    assert f"✗ model: model file {missing} does not exist" in up.stdout.replace("\n", "")
    assert "Traceback" not in up.stdout + up.stderr
    doctor = run_cli(env, "doctor")
    assert doctor.returncode == 1
    assert "✗ model (embedded)" in doctor.stdout and "✓ redis (embedded)" in doctor.stdout


def test_db_upgrade_without_a_database_says_what_to_do(tmp_path: Path) -> None:
    result = run_cli(stack_env(tmp_path / "data"), "db", "upgrade")
    assert result.returncode == 1
    out = result.stdout.replace("\n", "")
    assert "✗ cannot reach the database at postgresql+psycopg://turnflow:***@127.0.0.1:" in out
    assert "start it with `turnflow up`" in out
