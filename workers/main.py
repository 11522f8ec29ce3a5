"""Run turnflow's workers until SIGTERM/SIGINT: ``python -m workers.main``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from prometheus_client import start_http_server

from infra.config.build import build_id
from infra.config.settings import Settings, get_settings
from infra.runtime.deployments import deployment_of, promote_own_build
from infra.runtime.resources import Resources
from infra.runtime.schedules import ensure_schedules
from infra.runtime.search_attributes import ensure_search_attributes
from infra.telemetry.logging_setup import configure_logging
from infra.telemetry.setup import SERVICE_WORKER
from workers.chat import build_batch_worker, build_chat_worker
from workers.ingest import build_ingest_worker

log = logging.getLogger("turnflow.worker")


async def run_workers(settings: Settings, stop: asyncio.Event) -> None:
    res = await Resources.open(settings, service=SERVICE_WORKER)
    if settings.telemetry and settings.worker_metrics_port:
        # Prometheus scrapes each worker process on its own port (the API serves its own /metrics).
        start_http_server(settings.worker_metrics_port, addr=settings.api_host)
    try:
        await ensure_search_attributes(res.temporal)
        await ensure_schedules(res.temporal, res.policy)
        kinds = settings.kinds
        # Load the embedding model before taking work: loading it starves the event loop for seconds.
        # A process that ingests documents loads sentence-transformers as well as the query encoder.
        await res.embedder.warm_up(batches="ingest" in kinds)
        builders = {"chat": build_chat_worker, "batch": build_batch_worker, "ingest": build_ingest_worker}
        async with contextlib.AsyncExitStack() as workers:
            for kind in kinds:
                await workers.enter_async_context(builders[kind](res))
            queues = {kind: res.policy.queue(kind) for kind in kinds}
            log.info("worker polling %s", ", ".join(queues.values()))
            if settings.worker_versioning:
                names = ", ".join(deployment_of(settings, k) for k in kinds)
                log.info("build %s of deployments %s", build_id(settings.build_id), names)
                if settings.promote_on_start:
                    made = await promote_own_build(res.temporal, settings, queues)
                    log.info(
                        "build %s is current in %s", build_id(settings.build_id), ", ".join(made) or "all"
                    )
            await stop.wait()
            log.info("stopping: finishing in-flight activities")
    finally:
        await res.close()


async def _main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_workers(get_settings(), stop)


if __name__ == "__main__":
    configure_logging(get_settings().log_level)
    asyncio.run(_main())
