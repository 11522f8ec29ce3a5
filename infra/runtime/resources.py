"""The clients a process holds (Temporal, Postgres, Redis, models, HTTP), opened and closed together."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
from huggingface_hub import AsyncInferenceClient
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from activities.adapters.admission import TurnAdmission
from activities.adapters.breaker import CircuitBreakers
from activities.adapters.embedder import Embedders, LocalEmbedder, RemoteEmbedder
from activities.adapters.event_feed import EventFeed
from activities.adapters.model_client import make_inference_client
from activities.adapters.model_registry import ModelRegistry
from activities.adapters.rate_limits import RateLimiter
from activities.adapters.response_cache import ResponseCache
from activities.adapters.sealed_text import SealedText
from activities.adapters.search import HybridSearch, SearchSettings
from activities.adapters.stream_tokens import StreamTokens
from activities.adapters.tenant_keys import LocalKeyWrapper, TenantKeyring
from activities.adapters.turn_cancels import TurnCancels
from activities.adapters.turn_events import TurnEvents
from activities.adapters.webhook_sender import WebhookSender
from activities.adapters.ws_tickets import WsTickets
from activities.logic.safety import SafetyEngine
from db.engine import make_engine, make_sessionmaker
from db.vector_index import configured_index
from infra.config.endpoints import Endpoints, default_gguf
from infra.config.policy import Policy, load_policy
from infra.config.settings import Settings
from infra.runtime.deployments import EagerGate
from infra.runtime.payload_codec import AesGcmCodec, TenantCodec, deployment_keys
from infra.runtime.temporal_client import connect_temporal, temporal_tls
from infra.telemetry.setup import setup_telemetry


@dataclass
class Resources:
    settings: Settings
    policy: Policy
    endpoints: Endpoints
    temporal: Client
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: Redis
    model: AsyncInferenceClient
    http: httpx.AsyncClient
    events: TurnEvents
    cancels: TurnCancels
    safety: SafetyEngine
    codec: TenantCodec
    # Tenants' text at rest (Postgres, Redis), under the same data keys as their payloads.
    sealer: SealedText
    embedder: LocalEmbedder = field(default_factory=LocalEmbedder)
    # Set in an API process with an eager worker under Worker Versioning (infra/runtime/deployments.py).
    eager_gate: EagerGate | None = None
    _embedders: Embedders | None = None
    _search: HybridSearch | None = None
    _registry: ModelRegistry | None = None
    _breakers: CircuitBreakers | None = None
    _rate_limits: RateLimiter | None = None
    _admission: TurnAdmission | None = None
    _webhooks: WebhookSender | None = None
    _event_feed: EventFeed | None = None

    @classmethod
    async def open(
        cls, settings: Settings, *, lazy_temporal: bool = False, service: str | None = None
    ) -> Resources:
        """``service``: the process is one of turnflow's services (API, worker) and is traced and
        measured under that name; tools and one-off commands pass none."""
        policy = load_policy(settings.policy_file, settings.policy_overlay_file)
        endpoints = Endpoints.resolve(settings)
        telemetry = setup_telemetry(settings, endpoints.database_url, service) if service else None
        # After telemetry (its instrumentation wraps the engine), before Temporal (the codec needs it).
        engine = make_engine(endpoints.database_url, role=settings.database_role or None)
        keys = deployment_keys(settings)
        keyring = TenantKeyring(make_sessionmaker(engine), LocalKeyWrapper(keys), settings.tenant_key_cache_s)
        codec = TenantCodec(AesGcmCodec(keys), keyring)
        temporal = await connect_temporal(
            endpoints.temporal_address,
            policy.namespace,
            lazy=lazy_temporal,
            codec=codec,
            telemetry=telemetry,
            tls=temporal_tls(settings),
            api_key=settings.temporal_api_key,
        )
        if telemetry:
            telemetry.start_temporal_metrics()
        # `rediss://`: TLS, checked against TURNFLOW_REDIS_CA_FILE (else the system's roots).
        tls: dict[str, Any] = {}
        if endpoints.redis_url.startswith("rediss://") and settings.redis_ca_file:
            tls["ssl_ca_certs"] = str(settings.redis_ca_file)
        options: dict[str, Any] = {
            "socket_timeout": 5,
            "socket_connect_timeout": 2,
            # redis-py's default of 100 refused the 101st open stream (found by bench/load.py).
            "max_connections": settings.redis_max_connections,
            **tls,
        }
        redis: Redis
        if settings.redis_cluster:
            # The cluster client takes the same calls; every multi-key script, transaction and XREAD
            # of turnflow's names keys of one slot (hash tags: turn_events.py, context_cache.py, ...).
            redis = cast(Redis, RedisCluster.from_url(endpoints.redis_url, **options))
        else:
            redis = Redis.from_url(endpoints.redis_url, **options)
        sealer = SealedText(keyring, enabled=settings.at_rest_encryption)
        return cls(
            settings=settings,
            policy=policy,
            endpoints=endpoints,
            temporal=temporal,
            engine=engine,
            sessions=keyring.sessions,
            redis=redis,
            model=make_inference_client(endpoints.model_url, settings.tgi_token),
            http=httpx.AsyncClient(timeout=5.0),
            events=TurnEvents(redis, settings.event_retention_s, sealer),
            cancels=TurnCancels(redis, settings.event_retention_s),
            safety=SafetyEngine.load(),
            codec=codec,
            sealer=sealer,
        )

    @property
    def embedded_gguf(self) -> Path | None:
        """The GGUF file the embedded model server runs (None when the model server is not ours)."""
        if self.settings.model_path:
            return self.settings.model_path
        return default_gguf() if "model" in self.endpoints.embedded else None

    @property
    def registry(self) -> ModelRegistry:
        if self._registry is None:
            self._registry = ModelRegistry(
                self.policy.models,
                model_url=self.endpoints.model_url,
                embedded_gguf=self.embedded_gguf,
                http=self.http,
            )
        return self._registry

    @property
    def rate_limits(self) -> RateLimiter:
        if self._rate_limits is None:
            self._rate_limits = RateLimiter(self.redis, self.settings.rate_limit_window_s)
        return self._rate_limits

    @property
    def stream_tokens(self) -> StreamTokens:
        # Stateless but for Redis: made on each use.
        return StreamTokens(self.redis, self.settings.stream_token_ttl_s)

    @property
    def response_cache(self) -> ResponseCache:
        # Stateless but for Redis: made on each use.
        s = self.settings
        return ResponseCache(self.redis, self.sealer, s.response_cache_ttl_s, s.response_cache_entries)

    @property
    def ws_tickets(self) -> WsTickets:
        return WsTickets(self.redis)

    @property
    def admission(self) -> TurnAdmission:
        if self._admission is None:
            s = self.settings
            queue = self.policy.queue("chat")
            self._admission = TurnAdmission(self.redis, queue, s.max_inflight_turns, s.overload_retry_after_s)
        return self._admission

    @property
    def breakers(self) -> CircuitBreakers:
        if self._breakers is None:
            self._breakers = CircuitBreakers(self.redis, self.policy.breaker)
        return self._breakers

    @property
    def embedders(self) -> Embedders:
        """The remote embedder when one is configured (it embeds new work), and always the local one."""
        if self._embedders is None:
            s = self.settings
            if s.embedding_url:
                remote = RemoteEmbedder(
                    s.embedding_url,
                    s.embedding_model,
                    s.embedding_version,
                    self.embedder.dimension,
                    s.tgi_token,
                )
                self._embedders = Embedders(remote, self.embedder)
            else:
                self._embedders = Embedders(self.embedder)
        return self._embedders

    @property
    def search(self) -> HybridSearch:
        if self._search is None:
            s = self.settings
            self._search = HybridSearch(
                self.sessions,
                self.embedders,
                self.redis,
                self.sealer,
                SearchSettings(
                    candidates=s.search_candidates,
                    index=configured_index(s),
                    ivfflat_probes=s.ivfflat_probes,
                    ef_search=s.hnsw_ef_search,
                    max_scan_tuples=s.hnsw_max_scan_tuples,
                    cache_ttl_s=s.search_cache_ttl_s,
                    exact_max_rows=s.exact_search_max_rows,
                ),
            )
        return self._search

    @property
    def webhooks(self) -> WebhookSender:
        """Webhook requests under temporal.yaml's `webhooks:` rules (never to an internal address)."""
        if self._webhooks is None:
            self._webhooks = WebhookSender(self.policy.webhooks, self.settings.webhook_ca_file)
        return self._webhooks

    @property
    def event_feed(self) -> EventFeed:
        """The one reader of turns' event streams for the SSE clients of this (API) process."""
        if self._event_feed is None:
            self._event_feed = EventFeed(self.redis, self.events, by_slot=self.settings.redis_cluster)
        return self._event_feed

    async def close(self) -> None:
        if self._event_feed is not None:
            await self._event_feed.close()
        if self._webhooks is not None:
            await self._webhooks.close()
        await self.http.aclose()
        await self.cancels.close()
        await self.redis.aclose()
        await self.engine.dispose()
