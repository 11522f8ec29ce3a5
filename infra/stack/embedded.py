"""The stack `turnflow up` runs: embedded servers for every service without a configured URL, then ours."""

from __future__ import annotations

from collections.abc import Callable

from infra.config.endpoints import (
    EMBEDDED_DB_NAME,
    EMBEDDED_DB_USER,
    Endpoints,
    embedded_postgres_password,
)
from infra.config.policy import Policy
from infra.config.settings import Settings
from infra.stack.components.app import api_component, worker_component
from infra.stack.components.base import Component, ComponentFailed
from infra.stack.components.model import model_component
from infra.stack.components.postgres import postgres_component
from infra.stack.components.redis import redis_component
from infra.stack.components.temporal import temporal_component


def build_stack(settings: Settings, policy: Policy) -> tuple[Endpoints, list[Component]]:
    """Raises ComponentFailed naming the component whose binary or file is missing."""
    endpoints = Endpoints.resolve(settings)
    data = settings.data_dir.resolve()
    timeout = settings.startup_timeout_s
    embedded: dict[str, Callable[[], Component]] = {
        "temporal": lambda: temporal_component(
            data / "temporal",
            settings.temporal_port,
            settings.temporal_ui_port,
            policy.namespace,
            http_port=settings.temporal_http_port,
            metrics_port=settings.temporal_metrics_port,
            codec_endpoint=f"http://{settings.api_host}:{settings.api_port}/codec",
            startup_timeout_s=timeout,
        ),
        "postgres": lambda: postgres_component(
            data / "postgres",
            settings.postgres_port,
            superuser=EMBEDDED_DB_USER,
            password=embedded_postgres_password(settings),
            dbname=EMBEDDED_DB_NAME,
            shared_buffers=settings.postgres_shared_buffers,
            startup_timeout_s=timeout,
        ),
        "redis": lambda: redis_component(data / "redis", settings.redis_port),
        "model": lambda: model_component(
            settings.model_port,
            model_path=settings.model_path,
            alias=settings.model_name,
            context=settings.model_context,
            threads=settings.model_threads,
            startup_timeout_s=timeout,
        ),
    }
    components = []
    for name, build in embedded.items():
        if name in endpoints.embedded:
            try:
                components.append(build())
            except (FileNotFoundError, ModuleNotFoundError) as exc:
                raise ComponentFailed(name, str(exc)) from exc
    components.append(worker_component(settings, endpoints, policy))
    components.append(api_component(settings, endpoints, policy))
    return endpoints, components
