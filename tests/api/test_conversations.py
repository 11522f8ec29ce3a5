"""Conversations as a resource: listed newest first with cursor pagination and an end-user filter,
only the key's tenant's; renamed and given metadata with PATCH (only the fields sent change)."""

from __future__ import annotations

import uuid

from tests.support.api_harness import ApiServer
from tests.support.services import Services, db_rows


async def test_listing_pages_newest_first_filters_by_end_user_and_stays_in_the_tenant(api: ApiServer) -> None:
    tenant = f"lister-{uuid.uuid4().hex[:6]}"
    mine = await api.headers_for(tenant)
    made = []
    for i in range(5):
        body = {"title": f"chat {i}", "end_user": "ada" if i % 2 == 0 else "bob"}
        resp = await api.client.post("/v1/conversations", json=body, headers=mine)
        assert resp.status_code == 201
        made.append(resp.json()["id"])
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.client.get("/v1/conversations", params=params, headers=mine)).json()
        seen += [c["id"] for c in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made[::-1] and pages == 3
    ada = (await api.client.get("/v1/conversations", params={"end_user": "ada"}, headers=mine)).json()
    assert [c["id"] for c in ada["data"]] == [made[4], made[2], made[0]]
    assert [c["title"] for c in ada["data"]] == ["chat 4", "chat 2", "chat 0"]
    # The server's own client is another tenant: none of these, and none of its own in ours.
    theirs = (await api.client.get("/v1/conversations", params={"limit": 100})).json()
    assert not set(made) & {c["id"] for c in theirs["data"]}
    bad = await api.client.get("/v1/conversations", params={"cursor": "not-a-cursor"}, headers=mine)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"


async def test_patch_renames_and_sets_metadata_and_changes_only_what_is_sent(
    api: ApiServer, services: Services
) -> None:
    made = await api.client.post("/v1/conversations", json={"title": "first", "metadata": {"a": 1}})
    conv = made.json()["id"]
    renamed = await api.client.patch(f"/v1/conversations/{conv}", json={"title": "Trip to Lisbon"})
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["title"], renamed.json()["metadata"]) == ("Trip to Lisbon", {"a": 1})
    tagged = await api.client.patch(f"/v1/conversations/{conv}", json={"metadata": {"pinned": True}})
    assert (tagged.json()["title"], tagged.json()["metadata"]) == ("Trip to Lisbon", {"pinned": True})
    cleared = await api.client.patch(f"/v1/conversations/{conv}", json={"title": None})
    assert cleared.json()["title"] is None
    assert (await api.client.get(f"/v1/conversations/{conv}")).json()["metadata"] == {"pinned": True}
    # The title is sealed at rest like the one given at creation; the audit names fields, not values.
    (stored,) = db_rows(services, "SELECT title FROM conversations WHERE id = %s", conv)
    assert stored[0] is None
    await api.client.patch(f"/v1/conversations/{conv}", json={"title": "Secret plans"})
    (stored,) = db_rows(services, "SELECT title FROM conversations WHERE id = %s", conv)
    assert "Secret plans" not in str(stored[0])
    audits = db_rows(
        services,
        "SELECT details FROM audit_events WHERE action = %s AND object_id = %s ORDER BY id",
        "PATCH /v1/conversations/{conversation_id}",
        conv,
    )
    assert audits and all("Secret" not in str(d) for (d,) in audits)
    assert audits[-1][0]["changed"] == ["title"]
    for body, status in (({"title": "x" * 501}, 422), ({"colour": "red"}, 422)):
        resp = await api.client.patch(f"/v1/conversations/{conv}", json=body)
        assert resp.status_code == status, resp.text
    missing = await api.client.patch(f"/v1/conversations/{uuid.uuid4()}", json={"title": "x"})
    assert missing.status_code == 404
