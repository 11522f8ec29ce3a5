"""A tenant's PII policy (redact, mask or allow per kind) holds wherever text enters: chat messages
(before Temporal, and again in the validate step) and documents (before the index)."""

from __future__ import annotations

import json
import uuid

from tests.support.api_harness import ApiServer
from tests.support.services import Services, db_rows, opened

TEXT = "I am jane.doe@example.com and my card is 4242 4242 4242 4242."


async def test_tenant_policy_masks_and_allows_in_messages_and_documents(
    api: ApiServer, services: Services
) -> None:
    name = f"pii-{uuid.uuid4().hex[:8]}"
    headers = await api.headers_for(name)
    policy = json.dumps({"pii": {"EMAIL": "allow", "CARD": "mask"}})
    db_rows(services, "UPDATE tenants SET settings = %s::jsonb WHERE name = %s RETURNING id", policy, name)

    conv = await api.conversation(headers)
    said = await api.client.post(
        f"/v1/conversations/{conv}/messages",
        json={"content": TEXT, "stream": False, "max_tokens": 2},
        headers=headers,
    )
    assert said.status_code == 200, said.text
    [stored] = opened(
        services,
        "SELECT tenant_id, content FROM messages WHERE turn_id = %s AND role = 'user'",
        said.json()["turn_id"],
    )
    assert stored == "I am jane.doe@example.com and my card is **** **** **** 4242."

    doc = await api.client.post(
        "/v1/documents", json={"text": f"Contact sheet. {TEXT}", "source": "contacts.txt"}, headers=headers
    )
    assert doc.status_code == 201, doc.text
    [chunk] = opened(
        services, "SELECT tenant_id, text FROM chunks WHERE document_id = %s AND live", doc.json()["id"]
    )
    assert (
        "jane.doe@example.com" in chunk
        and "**** **** **** 4242" in chunk
        and "4242 4242 4242 4242" not in chunk
    )

    # Another tenant, with no policy: everything is redacted as before.
    plain = await api.client.post(
        f"/v1/conversations/{await api.conversation()}/messages",
        json={"content": TEXT, "stream": False, "max_tokens": 2},
    )
    [default] = opened(
        services,
        "SELECT tenant_id, content FROM messages WHERE turn_id = %s AND role = 'user'",
        plain.json()["turn_id"],
    )
    assert default == "I am [EMAIL] and my card is [CARD]."
