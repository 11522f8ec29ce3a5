"""Re-embedding on real Postgres, Redis and Temporal, with a worker process killed mid-run: vectors for
the new version are written beside the old ones, searches stay consistent throughout, the tenant
switches atomically once the canary passes, and the old vectors are dropped. A broken embedder fails
the canary and the tenant keeps its version."""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text
from temporalio.testing import ActivityEnvironment

from activities.contracts.reembed import ReembedInput, ReembedResult
from activities.ingest.reembed import ReembedActivities
from activities.logic.chunking import Chunker
from db.access import ensure_tenant
from db.engine import scope_to_tenant
from infra.config.settings import Settings
from infra.eval.bulk_ingest import TextDocument, bulk_ingest
from infra.runtime.resources import Resources
from tests.support.api_harness import isolated_settings
from tests.support.processes import start_worker, wait_for_log
from tests.support.services import Services
from tests.support.tei_stand_in import ScrambledTei, TeiStandIn

pytestmark = pytest.mark.timeout(300)

TOWNS = ["Arvel", "Brisk", "Corran", "Dunmere", "Elsby", "Fallow", "Grint", "Holm", "Istra", "Jorvik"]
CRAFTS = ["glassblowing", "cheese", "shipbuilding", "lace", "clocks", "pottery", "wool", "salt"]
FEASTS = ["lantern", "harvest", "kite", "river", "bell", "apple"]
MONTHS = ["March", "May", "July", "September", "November"]
TARGET_MODEL, TARGET_VERSION = "tei/all-MiniLM-L6-v2", "tei-1"


def town_documents(n: int) -> list[TextDocument]:
    combos = itertools.islice(itertools.product(TOWNS, CRAFTS, FEASTS, MONTHS), 0, None, 7)
    return [
        TextDocument(
            f"town-{i}",
            None,
            f"{town} number {i} is famous for its {craft}. Its {feast} festival takes place every {month}, "
            f"and visitors to {town} {i} buy {craft} at the market beside the old bridge.",
        )
        for i, (town, craft, feast, month) in zip(range(n), combos, strict=False)
    ]


async def versions(res: Resources, tenant: uuid.UUID) -> dict[tuple[str, str], int]:
    async with res.sessions.begin() as session:
        await scope_to_tenant(session, tenant)
        rows = await session.execute(
            text(
                "SELECT embedding_model, embedding_version, count(*) FROM chunks WHERE tenant_id = :t"
                " GROUP BY 1, 2"
            ),
            {"t": tenant},
        )
        return {(m, v): n for m, v, n in rows}


async def seeded_tenant(res: Resources, n: int) -> uuid.UUID:
    tenant = await ensure_tenant(res.sessions, f"t-{uuid.uuid4().hex[:8]}")
    chunker = Chunker(res.embedder.tokenizer_file)
    await bulk_ingest(res.sessions, res.sealer, res.embedder, chunker, tenant, town_documents(n))
    return tenant


def remote_settings(services: Services, tmp_path: Path, tei: TeiStandIn) -> Settings:
    settings = isolated_settings(
        services,
        tmp_path,
        embedding_url=tei.url,
        embedding_model=TARGET_MODEL,
        embedding_version=TARGET_VERSION,
    )
    # A killed worker's batch is noticed by its heartbeat timeout; keep the test's wait short.
    policy = yaml.safe_load(settings.policy_file.read_text())
    policy["activities"]["reembed_batch"]["heartbeat"] = "3s"
    settings.policy_file.write_text(yaml.safe_dump(policy))
    return settings


def start_remote_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    return start_worker(
        settings,
        log,
        TURNFLOW_EMBEDDING_URL=settings.embedding_url or "",
        TURNFLOW_EMBEDDING_MODEL=settings.embedding_model,
        TURNFLOW_EMBEDDING_VERSION=settings.embedding_version,
    )


async def test_reembed_survives_a_worker_crash_and_switches_atomically(
    services: Services, resources: Resources, tmp_path: Path
) -> None:
    async with TeiStandIn(resources.embedder) as tei:
        settings = remote_settings(services, tmp_path, tei)
        res = await Resources.open(settings)  # knows both embedders, as the workers do
        tenant = await seeded_tenant(res, 120)
        before = await versions(res, tenant)
        assert set(before) == {(res.embedder.model_id, res.embedder.version)}
        probe = "Which town holds a kite festival and is famous for lace?"
        expected = (await res.search.search(tenant, probe, 3, "vector", use_cache=False)).chunks[0].text

        log = tmp_path / "worker.log"
        worker = start_remote_worker(settings, log)
        seen_versions: set[str | None] = set()
        stop = asyncio.Event()

        async def keep_searching() -> None:
            # Searches while the run goes on: never empty, never a mix of versions.
            while not stop.is_set():
                found = await res.search.search(tenant, probe, 5, "hybrid", use_cache=False)
                assert found.chunks, "a search found nothing during the re-embed"
                assert len({c.embedding_version for c in found.chunks}) == 1
                seen_versions.add(found.embedding_version)
                await asyncio.sleep(0.05)

        searcher = asyncio.create_task(keep_searching())
        try:
            await wait_for_log(log, "worker polling")
            handle = await res.temporal.start_workflow(
                "reembed",
                ReembedInput(
                    options=res.policy.options_for("reembed"),
                    target_model=TARGET_MODEL,
                    target_version=TARGET_VERSION,
                    tenant_ids=[str(tenant)],
                    batch_size=8,
                ),
                id=f"reembed-test-{uuid.uuid4()}",
                task_queue=res.policy.queue("ingest"),
                result_type=ReembedResult,
            )
            # Kill the worker (SIGKILL) once a few batches are committed.
            for _ in range(600):
                mid = await versions(res, tenant)
                if mid.get((TARGET_MODEL, TARGET_VERSION), 0) >= 24:
                    break
                await asyncio.sleep(0.05)
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            partial = await versions(res, tenant)
            assert (
                0
                < partial.get((TARGET_MODEL, TARGET_VERSION), 0)
                < before[(res.embedder.model_id, res.embedder.version)]
            )
            worker = start_remote_worker(settings, log)
            result = await asyncio.wait_for(handle.result(), 240)
        finally:
            stop.set()
            worker.send_signal(signal.SIGTERM)
            worker.wait()
            await searcher  # re-raises what the searcher saw go wrong

        [report] = result.tenants
        assert report.status == "switched" and report.canary and report.canary.recall_new >= 0.8
        after = await versions(res, tenant)
        # Exactly one vector per chunk on the new version; the old ones are gone.
        assert after == {
            (TARGET_MODEL, TARGET_VERSION): before[(res.embedder.model_id, res.embedder.version)]
        }
        assert seen_versions >= {res.embedder.version}
        found = await res.search.search(tenant, probe, 3, "vector", use_cache=False)
        assert (
            found.embedding_version == TARGET_VERSION and found.chunks[0].embedding_version == TARGET_VERSION
        )
        # The same chunk text comes first with the new vectors (MiniLM either way).
        assert found.chunks[0].text == expected
        await res.close()


async def test_a_failed_canary_keeps_the_tenant_on_its_version(
    services: Services, resources: Resources, tmp_path: Path
) -> None:
    async with ScrambledTei(resources.embedder) as tei:
        settings = remote_settings(services, tmp_path, tei)
        res = await Resources.open(settings)
        tenant = await seeded_tenant(res, 30)
        before = await versions(res, tenant)
        log = tmp_path / "worker.log"
        worker = start_remote_worker(settings, log)
        try:
            await wait_for_log(log, "worker polling")
            result = await res.temporal.execute_workflow(
                "reembed",
                ReembedInput(
                    options=res.policy.options_for("reembed"), tenant_ids=[str(tenant)], batch_size=16
                ),
                id=f"reembed-test-{uuid.uuid4()}",
                task_queue=res.policy.queue("ingest"),
                result_type=ReembedResult,
            )
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait()
        [report] = result.tenants
        assert result.target.model == TARGET_MODEL  # no target given: the deployment's default embedder
        assert report.status == "kept" and report.canary and report.canary.recall_new < 0.8
        assert report.canary.recall_current >= 0.8
        assert await versions(res, tenant) == before  # the scrambled vectors were dropped
        found = await res.search.search(tenant, "Which town makes clocks?", 3, use_cache=False)
        assert found.embedding_version == res.embedder.version and found.chunks
        await res.close()


async def test_the_plan_leaves_out_tenants_whose_residency_the_embedder_lacks(
    resources: Resources,
) -> None:
    """Re-embedding sends every chunk's text to the embedder: only tenants it may see are planned."""
    onprem = await ensure_tenant(resources.sessions, f"t-{uuid.uuid4().hex[:8]}")
    eu = await ensure_tenant(resources.sessions, f"t-{uuid.uuid4().hex[:8]}")
    async with resources.sessions.begin() as session:
        for tenant, tags in ((onprem, ["on-prem"]), (eu, ["eu"])):
            await session.execute(
                text(
                    "UPDATE tenants SET residency_tags = :tags, embedding_model = 'old-model',"
                    " embedding_version = 'old' WHERE id = :id"
                ),
                {"tags": tags, "id": tenant},
            )
    acts = ReembedActivities(
        resources.sessions, resources.embedders, resources.redis, resources.sealer, ["on-prem"]
    )
    wanted = [str(onprem), str(eu)]
    plan = await ActivityEnvironment().run(
        acts.reembed_plan, ReembedInput(options=resources.policy.options_for("reembed"), tenant_ids=wanted)
    )
    assert plan.tenant_ids == [str(onprem)]
    everywhere = ReembedActivities(
        resources.sessions, resources.embedders, resources.redis, resources.sealer, ["on-prem", "eu"]
    )
    plan = await ActivityEnvironment().run(
        everywhere.reembed_plan,
        ReembedInput(options=resources.policy.options_for("reembed"), tenant_ids=wanted),
    )
    assert plan.tenant_ids == wanted
