"""RetentionWorkflow deletes exactly what has expired: a tenant's old transcripts (Postgres), their turn
streams and context caches (Redis); recent ones, and tenants without a retention, keep theirs."""

from __future__ import annotations

import uuid

from activities.adapters.context_cache import recent_key
from activities.adapters.turn_events import stream_key
from activities.contracts.maintenance import RetentionInput, RetentionReport
from db.access import ensure_tenant
from infra.runtime.resources import Resources
from tests.support.services import Services, db_rows
from workers.ingest import build_ingest_worker


def seed(services: Services, tenant: uuid.UUID, age_days: float) -> tuple[str, list[str]]:
    """A conversation with two turns, `age_days` old; returns its id and its turn ids."""
    conv, turns = uuid.uuid4(), [f"turn-ret-{uuid.uuid4()}" for _ in range(2)]
    age = f"{age_days} days"
    db_rows(
        services,
        "INSERT INTO conversations (id, tenant_id, created_at) VALUES (%s, %s, now() - %s::interval)"
        " RETURNING id",
        conv,
        tenant,
        age,
    )
    for turn in turns:
        for role in ("user", "assistant"):
            db_rows(
                services,
                "INSERT INTO messages (id, tenant_id, conversation_id, turn_id, role, content, created_at)"
                " VALUES (%s, %s, %s, %s, %s, 'text', now() - %s::interval) RETURNING id",
                uuid.uuid4(),
                tenant,
                conv,
                turn,
                role,
                age,
            )
    return str(conv), turns


def count(services: Services, conv: str) -> int:
    [(n,)] = db_rows(services, "SELECT count(*) FROM messages WHERE conversation_id = %s", conv)
    return int(n)


async def test_retention_deletes_exactly_what_has_expired(
    services: Services, resources: Resources, task_queue: str
) -> None:
    limited = await ensure_tenant(resources.sessions, f"ret-{uuid.uuid4().hex[:8]}")
    forever = await ensure_tenant(resources.sessions, f"keep-{uuid.uuid4().hex[:8]}")
    db_rows(
        services,
        "UPDATE tenants SET settings = '{\"retention_days\": 2}' WHERE id = %s RETURNING id",
        limited,
    )
    old_conv, old_turns = seed(services, limited, 3)
    new_conv, new_turns = seed(services, limited, 1)
    kept_conv, _ = seed(services, forever, 30)
    for turn in old_turns + new_turns:
        await resources.redis.xadd(stream_key(turn), {"type": "token"})
    await resources.redis.rpush(recent_key(old_conv), "{}")

    async def run(dry_run: bool) -> RetentionReport:
        async with build_ingest_worker(resources, task_queue=task_queue):
            return await resources.temporal.execute_workflow(
                "retention",
                RetentionInput(options=resources.policy.options_for("retention"), dry_run=dry_run),
                id=f"retention-{uuid.uuid4()}",
                task_queue=task_queue,
                result_type=RetentionReport,
            )

    planned = await run(dry_run=True)
    [mine] = [t for t in planned.tenants if t.tenant.startswith("ret-") and t.retention_days == 2]
    assert (mine.messages, mine.conversations, mine.streams) == (4, 1, 2) and planned.dry_run
    assert count(services, old_conv) == 4  # a dry run deletes nothing
    assert any(name.startswith("keep-") for name in planned.kept_forever)

    report = await run(dry_run=False)
    [mine] = [t for t in report.tenants if t.tenant == mine.tenant]
    assert (mine.messages, mine.conversations, mine.streams) == (4, 1, 2)
    assert (
        count(services, old_conv) == 0 and count(services, new_conv) == 4 and count(services, kept_conv) == 4
    )
    assert db_rows(services, "SELECT id FROM conversations WHERE id = %s", old_conv) == []
    assert await resources.redis.exists(*(stream_key(t) for t in old_turns)) == 0
    assert await resources.redis.exists(*(stream_key(t) for t in new_turns)) == 2
    assert not await resources.redis.exists(recent_key(old_conv))
    [(details,)] = db_rows(
        services, "SELECT details FROM audit_events WHERE actor = 'retention' AND tenant_id = %s", limited
    )
    assert details["messages"] == 4

    again = await run(dry_run=False)  # nothing left to do
    assert [t.messages for t in again.tenants if t.tenant == mine.tenant] == [0]
