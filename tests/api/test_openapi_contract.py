"""The API against its own OpenAPI document, fuzzed by schemathesis: no 500s, every status, content type
and body as documented (errors in the one `{"error": {...}}` shape, SSE events as declared), and no route
that answers without a key. Real API, Temporal, Postgres, Redis and model server."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

from infra.runtime.resources import Resources
from tests.support.api_harness import REAL_MODEL, ApiServer, isolated_settings, real_model_entry
from tests.support.services import Services
from workers.chat import build_batch_worker
from workers.ingest import build_ingest_worker

pytestmark = pytest.mark.timeout(600)

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "ignored_auth",
    "missing_required_header",
    "unsupported_method",
]
# Left out on purpose: positive_data_acceptance (rules beyond the schema answer 422 to schema-valid
# input: a blank message, `since` after `until`), and negative_data_rejection (pydantic's lax mode takes
# "1" for 1 and a Unix time for a date-time, by design).

# Real objects for the path parameters, so fuzzed requests get past "not found" to the routes' work.
CONFIG = """\
[parameters]
"path.conversation_id" = "{conversation}"
"path.document_id" = "{document}"
"path.turn_id" = "{turn}"
"""


async def test_openapi_contract_holds_under_fuzzing(services: Services, tmp_path: Path) -> None:
    # Replies capped at a few tokens: hundreds of fuzzed turns run on the real model.
    models = {REAL_MODEL: real_model_entry(max_output_tokens=6)}
    settings = isolated_settings(services, tmp_path, models=models)
    res = await Resources.open(settings)
    try:
        # The deployment's workers beside the API: ingestion answers uploads, batch turns run, and
        # /healthz is 200 (a 503 would count as a server error).
        async with build_ingest_worker(res), build_batch_worker(res), ApiServer(settings) as api:
            # An admin key reaches every route (codec and audit included); a tenant of its own.
            admin = await api.headers_for("schemathesis", ("admin",))
            conversation = await api.conversation(admin)
            turn = await api.client.post(
                f"/v1/conversations/{conversation}/messages",
                json={"content": "Hello", "stream": False},
                headers=admin,
            )
            document = await api.client.post(
                "/v1/documents", json={"text": "Fuzzing notes.", "source": "st"}, headers=admin
            )
            assert turn.status_code == 200 and document.status_code == 201, (turn.text, document.text)
            config = tmp_path / "schemathesis.toml"
            config.write_text(
                CONFIG.format(
                    conversation=conversation, document=document.json()["id"], turn=turn.json()["turn_id"]
                )
            )
            proc = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "st"),
                "--config-file",
                str(config),
                "run",
                f"{api.url}/openapi.json",
                "--header",
                f"Authorization: {admin['Authorization']}",
                "--checks",
                ",".join(CHECKS),
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "10",
                "--seed",
                "20261124",
                # A request that hangs is a failure, not a slow test.
                "--request-timeout",
                "30",
                "--generation-database",
                "none",
                "--no-color",
                cwd=tmp_path,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out = (await proc.communicate())[0].decode(errors="replace")
    finally:
        await res.close()
    assert proc.returncode == 0, out[-12000:]
    # It really ran: every operation, and a few hundred cases, all passing.
    selected = re.search(r"Selected: (\d+)/(\d+)", out)
    assert selected and selected[1] == selected[2] and int(selected[1]) >= 30, out[-3000:]
    assert f"Tested: {selected[1]}" in out, out[-3000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", out)
    assert counts and int(counts[1]) >= 300 and counts[1] == counts[2], out[-3000:]
