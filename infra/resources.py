"""The clients a process holds (Temporal, Postgres, Redis, model, HTTP), opened and closed together."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from huggingface_hub import AsyncInferenceClient
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from db.engine import make_engine, make_sessionmaker
from infra.endpoints import Endpoints
from infra.model_client import make_inference_client
from infra.policy import Policy, load_policy
from infra.settings import Settings
from infra.temporal_client import connect_temporal


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

    @classmethod
    async def open(cls, settings: Settings, *, lazy_temporal: bool = False) -> Resources:
        policy = load_policy(settings.policy_file)
        endpoints = Endpoints.resolve(settings)
        temporal = await connect_temporal(endpoints.temporal_address, policy.namespace, lazy=lazy_temporal)
        engine = make_engine(endpoints.database_url)
        return cls(
            settings=settings,
            policy=policy,
            endpoints=endpoints,
            temporal=temporal,
            engine=engine,
            sessions=make_sessionmaker(engine),
            redis=Redis.from_url(endpoints.redis_url, socket_timeout=5, socket_connect_timeout=2),
            model=make_inference_client(endpoints.model_url, settings.tgi_token),
            http=httpx.AsyncClient(timeout=5.0),
        )

    async def close(self) -> None:
        await self.http.aclose()
        await self.redis.aclose()
        await self.engine.dispose()
