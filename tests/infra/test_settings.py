"""Settings and endpoint resolution: embedded by default, configured URLs win, production refuses embedded."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from infra.config.endpoints import Endpoints
from infra.config.policy import load_policy
from infra.config.settings import REPO_ROOT, Settings
from infra.stack.embedded import build_stack

POLICY = REPO_ROOT / "temporal.yaml"


def test_defaults_are_embedded(tmp_path: Path) -> None:
    ep = Endpoints.resolve(Settings(_env_file=None, data_dir=tmp_path))
    assert ep.embedded == {"temporal", "postgres", "redis", "model"}
    assert ep.temporal_address == "127.0.0.1:7233"
    from infra.config.policy import load_policy
    from infra.stack.embedded import build_stack

    _, components = build_stack(Settings(_env_file=None, data_dir=tmp_path), load_policy(POLICY))
    assert components[0].urls["Temporal web UI"] == "http://127.0.0.1:8233"
    assert ep.redis_url == "redis://127.0.0.1:6380/0"
    assert ep.model_url == "http://127.0.0.1:8090"


def test_embedded_password_is_made_once_and_private(tmp_path: Path) -> None:
    first = Endpoints.resolve(Settings(_env_file=None, data_dir=tmp_path)).database_url
    second = Endpoints.resolve(Settings(_env_file=None, data_dir=tmp_path)).database_url
    assert first == second
    assert (tmp_path / "postgres.password").stat().st_mode & 0o077 == 0


def test_configured_urls_skip_embedded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TURNFLOW_TGI_URL", "http://tgi.internal:8080/v1/")
    monkeypatch.setenv("TURNFLOW_REDIS_URL", "redis://cache:6379/2")
    ep = Endpoints.resolve(Settings(_env_file=None, data_dir=tmp_path))
    assert ep.model_url == "http://tgi.internal:8080"
    assert ep.redis_url == "redis://cache:6379/2"
    assert ep.embedded == {"temporal", "postgres"}
    assert ep.as_env()["TURNFLOW_REDIS_URL"] == "redis://cache:6379/2"


def test_production_refuses_embedded_services() -> None:
    with pytest.raises(ValidationError, match="TURNFLOW_DATABASE_URL"):
        Settings(_env_file=None, environment="production", temporal_address="t:7233")
    plain = {
        "temporal_address": "t:7233",
        "database_url": "postgresql+psycopg://u:p@db/x",
        "redis_url": "redis://r",
        "tgi_url": "http://tgi",
    }
    # Plain connections to every service: refused, each named, unless waived on purpose.
    with pytest.raises(ValidationError, match="TLS to temporal, postgres, redis"):
        Settings(_env_file=None, environment="production", metrics_token="m", **plain)
    waived = Settings(
        _env_file=None,
        environment="production",
        metrics_token="m",
        tls_waived="temporal,postgres,redis",
        **plain,
    )
    assert waived.services_without_tls() == []
    external = {
        **plain,
        "database_url": "postgresql+psycopg://u:p@db/x?sslmode=verify-full&sslrootcert=/ca.pem",
        "redis_url": "rediss://r",
        "temporal_tls": True,
    }
    # /metrics names tenants and what each spends: not on the public port without a credential.
    with pytest.raises(ValidationError, match="TURNFLOW_API_METRICS_PORT"):
        Settings(_env_file=None, environment="production", **external)
    ok = Settings(_env_file=None, environment="production", metrics_token="scrape-secret", **external)
    assert ok.environment == "production"
    own_port = Settings(_env_file=None, environment="production", api_metrics_port=9465, **external)
    assert own_port.api_metrics_port == 9465


def test_children_count_tokens_locally_when_the_model_is_embedded(tmp_path: Path) -> None:
    """The worker and API get the GGUF path, so they never ask the busy model server to tokenize."""
    from infra.config.endpoints import default_gguf

    settings = Settings(_env_file=None, data_dir=tmp_path)
    _, components = build_stack(settings, load_policy(POLICY))
    children = {c.name: c.env for c in components if c.name in ("worker", "api")}
    assert {env["TURNFLOW_MODEL_PATH"] for env in children.values()} == {str(default_gguf())}

    external = Settings(_env_file=None, data_dir=tmp_path, tgi_url="http://tgi:8080")
    _, components = build_stack(external, load_policy(POLICY))
    assert all("TURNFLOW_MODEL_PATH" not in c.env for c in components if c.name in ("worker", "api"))


def test_a_worker_process_serves_the_kinds_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().kinds == ("chat", "batch", "ingest")
    assert Settings(worker_kinds="ingest, chat").kinds == ("chat", "ingest")  # in WORKER_KINDS' order
    with pytest.raises(ValueError, match="worker kinds are chat, batch, ingest"):
        Settings(worker_kinds="chat,embed")
    # Under temporal-worker-controller: its build id and deployment name, which must be this one kind's.
    monkeypatch.setenv("TEMPORAL_WORKER_BUILD_ID", "v2-8f1c")
    monkeypatch.setenv("TEMPORAL_DEPLOYMENT_NAME", "prod/turnflow-chat")
    controlled = Settings(worker_kinds="chat", deployment_name="prod/turnflow")
    assert controlled.build_id == "v2-8f1c" and controlled.kinds == ("chat",)
    with pytest.raises(ValueError, match="TEMPORAL_DEPLOYMENT_NAME is 'prod/turnflow-chat'"):
        Settings(worker_kinds="chat,batch", deployment_name="prod/turnflow")
    with pytest.raises(ValueError, match="would serve turnflow-chat"):
        Settings(worker_kinds="chat")
