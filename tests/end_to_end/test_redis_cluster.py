"""turnflow on a real three-node Redis Cluster (TURNFLOW_REDIS_CLUSTER): whole turns stream, a
conversation's context is cached, a dropped client resumes, turns whose streams live in different
slots stream side by side, and a key's revocation reaches the API over the cluster's pub/sub. Every
script and transaction names keys of one slot (hash tags), and the API reads each feed group's
streams with an XREAD of its own."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from activities.adapters.turn_events import feed_group, stream_key
from db.access import create_key, ensure_tenant
from infra.cli.access import revoke
from tests.support.api_harness import ApiServer, isolated_settings
from tests.support.redis_cluster import redis_cluster
from tests.support.services import Services
from tests.support.sse import Event, collect

pytestmark = pytest.mark.timeout(240)


async def stream_turn(api: ApiServer, conv: str, content: str) -> tuple[str, list[Event]]:
    async with api.client.stream(
        "POST", f"/v1/conversations/{conv}/messages", json={"content": content, "max_tokens": 8}
    ) as resp:
        assert resp.status_code == 200, await resp.aread()
        return resp.headers["x-turn-id"], await collect(resp)


async def test_turns_stream_resume_and_keep_context_on_a_redis_cluster(
    services: Services, tmp_path: Path
) -> None:
    with redis_cluster(tmp_path / "cluster") as ports:
        settings = isolated_settings(
            services, tmp_path, redis_url=f"redis://127.0.0.1:{ports[0]}/0", redis_cluster=True
        )
        async with ApiServer(settings) as api:
            conv = await api.conversation()
            first_id, first = await stream_turn(api, conv, "Name one colour.")
            # The second turn reads the first from the conversation's cached context (a script over
            # two keys of the conversation's slot).
            second_id, second = await stream_turn(api, conv, "And one more?")
            for seen in (first, second):
                kinds = [e.event for e in seen]
                assert kinds[0] == "turn" and "done" in kinds and "token" in kinds, kinds
            # A client that dropped resumes from its last event, with nothing missed or repeated.
            async with api.client.stream("GET", f"/v1/turns/{second_id}/events") as resp:
                whole = await collect(resp)
            tokens = [e for e in second if e.event == "token"]
            async with api.client.stream(
                "GET", f"/v1/turns/{second_id}/events", headers={"Last-Event-ID": tokens[0].id or ""}
            ) as resp:
                rest = await collect(resp)
            assert [e.id for e in whole] == [e.id for e in [*second[: second.index(tokens[0]) + 1], *rest]]
            # Turns in other conversations, streamed side by side: their streams are in several slots.
            convs = [await api.conversation() for _ in range(4)]
            results = await asyncio.gather(*(stream_turn(api, c, "Say hi.") for c in convs))
            assert all("done" in [e.event for e in seen] for _, seen in results)
            turns = [first_id, second_id, *(t for t, _ in results)]
            assert len({feed_group(t) for t in turns}) > 1, "the turns' streams were all in one group"
            # A revoked key stops working at once: the announcement travels by the cluster's pub/sub.
            sessions = api.app.state.resources.sessions
            tenant = await ensure_tenant(sessions, f"cluster-{uuid.uuid4().hex[:8]}")
            key, row = await create_key(sessions, tenant, "live", ["chat"])
            auth = {"Authorization": f"Bearer {key}"}
            assert (await api.client.post("/v1/conversations", json={}, headers=auth)).status_code == 201
            assert await revoke(api.app.state.resources, row.prefix) == f"revoked key {row.prefix}"
            deadline = time.monotonic() + 1.0
            while (await api.client.post("/v1/conversations", json={}, headers=auth)).status_code != 401:
                assert time.monotonic() < deadline, (
                    "a revoked key still worked a second after its announcement"
                )
                await asyncio.sleep(0.05)


def test_a_turn_s_keys_land_where_their_tags_say(tmp_path: Path) -> None:
    """The hash tags put each multi-key operation's keys in one slot, so the cluster accepts them."""
    with redis_cluster(tmp_path / "cluster") as ports:
        rc = RedisCluster(host="127.0.0.1", port=ports[0])
        keys = [stream_key(f"turn-{i}") for i in range(64)]
        slots = {rc.keyslot(k) for k in keys}
        # 64 turns fall in a few feed groups, one slot each: one XREAD per group reads them all.
        assert len(slots) == len({feed_group(f"turn-{i}") for i in range(64)}) <= 16
        by_group: dict[int, list[str]] = {}
        for i, key in enumerate(keys):
            rc.xadd(key, {"i": i})
            by_group.setdefault(feed_group(f"turn-{i}"), []).append(key)
        for group_keys in by_group.values():
            read = rc.xread(dict.fromkeys(group_keys, "0-0"))
            assert len(read) == len(group_keys)
