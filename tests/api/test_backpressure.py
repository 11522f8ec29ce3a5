"""Past capacity, a new interactive turn is refused at once (503, Retry-After, retryable), a client
rejoining its own turn is not, batch turns still queue, and room comes back when a turn is recorded."""

from __future__ import annotations

from pathlib import Path

from tests.support.api_harness import ApiServer, isolated_settings
from tests.support.prometheus import delta, scrape
from tests.support.services import Services
from tests.support.sse import events

LONG = {"content": "Tell a long story about a lighthouse keeper.", "max_tokens": 200, "temperature": 0}


async def test_turns_past_capacity_are_refused_at_once_then_admitted(
    services: Services, tmp_path: Path
) -> None:
    settings = isolated_settings(services, tmp_path, max_inflight_turns=1, overload_retry_after_s=3)
    async with ApiServer(settings) as api:
        conv = await api.conversation()
        url = f"/v1/conversations/{conv}/messages"
        before = await scrape(api)
        async with api.client.stream("POST", url, json=LONG, headers={"Idempotency-Key": "long"}) as first:
            stream = events(first)
            async for event in stream:
                if event.event == "token":
                    break  # the long turn is generating: the one place is taken
            refused = await api.client.post(url, json={"content": "Hi", "stream": False})
            assert refused.status_code == 503, refused.text
            assert refused.headers["Retry-After"] == "3"
            assert refused.json()["error"]["code"] == "overloaded" and refused.json()["error"]["retryable"]
            compat = await api.client.post(
                "/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}]}
            )
            assert compat.status_code == 503 and compat.headers["Retry-After"] == "3"
            # The client retrying its own turn is not new work: it joins it.
            async with api.client.stream(
                "POST", url, json=LONG, headers={"Idempotency-Key": "long"}
            ) as again:
                assert again.status_code == 200
            # Batch turns queue by design: accepted, not shed.
            queued = await api.client.post(url, json={"content": "Hi", "interactive": False, "max_tokens": 2})
            assert queued.status_code == 202, queued.text
            ended = [e.event async for e in stream if e.event in ("done", "error")]
            assert ended == ["done"]
        # The long turn is recorded: its place is free again.
        ok = await api.client.post(url, json={"content": "Hi", "stream": False, "max_tokens": 2})
        assert ok.status_code == 200, ok.text
        after = await scrape(api)
    assert delta(before, after, "turnflow_turns_shed_total") == 2
