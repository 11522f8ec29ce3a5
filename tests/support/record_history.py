"""Record workflow histories from a running stack (`make run`) into tests/histories/ for replay tests.

.venv/bin/python -m tests.support.record_history

It records every kind; keep only what tests/histories/README.md says to renew (a pinned workflow's new
recording), and put the auto-upgrade workflows' recordings back (`git checkout`): theirs must all replay.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from activities.contracts.maintenance import PurgeInput
from activities.contracts.reembed import ReembedInput
from db.access import read_demo_key
from infra.config.settings import get_settings
from infra.runtime.payload_codec import ENCODING as ENCRYPTED
from infra.runtime.resources import Resources
from tests.support.replay import HISTORIES
from workflows.stack_probe import StackProbeInput, StackProbeResult


async def plaintext(node: Any, codec: PayloadCodec) -> Any:
    """The history's JSON with every encrypted payload decrypted: recorded histories replay in the
    tests without the recording stack's keys."""
    if isinstance(node, list):
        return [await plaintext(item, codec) for item in node]
    if not isinstance(node, dict):
        return node
    if isinstance(node.get("metadata"), dict) and "encoding" in node["metadata"]:
        payload = json_format.ParseDict(node, Payload())
        if payload.metadata.get("encoding") == ENCRYPTED:
            [decoded] = await codec.decode([payload])
            return json_format.MessageToDict(decoded)
        return node
    return {key: await plaintext(value, codec) for key, value in node.items()}


async def record(res: Resources, name: str, workflow_id: str) -> None:
    history = await res.temporal.get_workflow_handle(workflow_id).fetch_history()
    HISTORIES.mkdir(exist_ok=True)
    events = await plaintext(history.to_json_dict(), res.codec)
    (HISTORIES / f"{name}.json").write_text(json.dumps(events, indent=2))
    print(f"recorded {len(history.events)} events of {workflow_id} into {HISTORIES / f'{name}.json'}")


async def main() -> None:
    settings = get_settings()
    res = await Resources.open(settings)
    try:
        probe_id = f"record-stack-probe-{uuid.uuid4()}"
        await res.temporal.execute_workflow(
            "stack_probe",
            StackProbeInput(options=res.policy.options_for("stack_probe")),
            id=probe_id,
            task_queue=res.policy.queue("chat"),
            result_type=StackProbeResult,
        )
        await record(res, "stack_probe", probe_id)

        api = f"http://{settings.api_host}:{settings.api_port}"
        auth = {"Authorization": f"Bearer {read_demo_key(settings)}"}
        async with httpx.AsyncClient(base_url=api, headers=auth, timeout=120) as http:
            conv = (await http.post("/v1/conversations", json={"title": "recorded"})).json()["id"]
            turn = (
                await http.post(
                    f"/v1/conversations/{conv}/messages",
                    json={"content": "Name one planet.", "stream": False, "max_tokens": 12},
                )
            ).json()
        await res.temporal.get_workflow_handle(turn["turn_id"]).result()
        await record(res, "chat_turn", turn["turn_id"])

        async with httpx.AsyncClient(base_url=api, headers=auth, timeout=120) as http:
            text = " ".join(f"Recorded fact {i}: the Ferrow canal has {i} locks." for i in range(60))
            doc = (
                await http.post("/v1/documents", json={"text": text, "source": f"rec-{uuid.uuid4()}"})
            ).json()
        await res.temporal.get_workflow_handle(doc["workflow_id"]).result()
        await record(res, "ingest_document", doc["workflow_id"])

        for name, arg in (
            ("reembed", ReembedInput(options=res.policy.options_for("reembed"))),
            (
                "purge_tombstones",
                PurgeInput(options=res.policy.options_for("purge_tombstones"), dry_run=True),
            ),
        ):
            workflow_id = f"record-{name}-{uuid.uuid4()}"
            await res.temporal.execute_workflow(
                name, arg, id=workflow_id, task_queue=res.policy.queue("ingest")
            )
            await record(res, name, workflow_id)
    finally:
        await res.close()


if __name__ == "__main__":
    asyncio.run(main())
