"""Webhooks go only where the rules allow: https, public addresses, the tenant's hosts. Internal
addresses (by literal or by name), redirects, credentials and plain http are refused and audited; an
allowed https receiver gets the delivery over a connection pinned to the address that was checked."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.adapters.webhook_sender import WebhookSender
from activities.chat.webhook import WebhookActivities
from activities.contracts.turn import ChatTurnResult, WebhookInput
from activities.logic.webhook_targets import WebhookRefused, check_address, parse_target
from infra.config.webhooks import WebhookPolicy
from infra.runtime.resources import Resources
from tests.support.api_harness import ApiServer
from tests.support.in_loop_server import InLoopServer
from tests.support.services import Services, db_rows
from tests.support.tls import Certificates, make_certificates

STRICT = WebhookPolicy()


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://hooks.example.com/t", "scheme"),
        ("ftp://hooks.example.com/t", "scheme"),
        ("https://user:pw@hooks.example.com/t", "credentials"),
        ("https:///t", "url"),
    ],
)
def test_the_url_rules(url: str, code: str) -> None:
    with pytest.raises(WebhookRefused) as refused:
        parse_target(url, STRICT)
    assert refused.value.code == code


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.7", "private"),
        ("172.16.9.9", "private"),
        ("169.254.169.254", "link-local"),  # the cloud metadata address
        ("0.0.0.0", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not globally routable"),  # carrier-grade NAT
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "link-local"),
        ("2002:7f00:1::", "loopback"),  # 6to4 around 127.0.0.1
    ],
)
def test_internal_addresses_are_refused(address: str, kind: str) -> None:
    target = parse_target("https://hooks.example.com/t", STRICT)
    with pytest.raises(WebhookRefused, match=f"a {kind} address") as refused:
        check_address(target, address, STRICT)
    assert refused.value.code == "address"


def test_public_addresses_and_allowed_networks_pass() -> None:
    target = parse_target("https://hooks.example.com:8443/t?x=1", STRICT)
    assert str(check_address(target, "93.184.215.14", STRICT)) == "93.184.215.14"
    assert target.url_to(check_address(target, "2606:4700::1", STRICT)) == "https://[2606:4700::1]:8443/t?x=1"
    inside = WebhookPolicy(allow_private=["10.20.0.0/16"])
    assert str(check_address(target, "10.20.3.4", inside)) == "10.20.3.4"
    with pytest.raises(WebhookRefused):
        check_address(target, "10.21.3.4", inside)


def test_a_tenant_narrows_the_hosts() -> None:
    assert parse_target("https://a.hooks.example.com/t", STRICT, ["*.hooks.example.com"]).host
    with pytest.raises(WebhookRefused) as refused:
        parse_target("https://elsewhere.example.org/t", STRICT, ["*.hooks.example.com"])
    assert refused.value.code == "tenant_host"


class Receiver(InLoopServer):
    """An https receiver: records deliveries; /redirect points at an internal address; /big and /slow
    answer too much and too late, on purpose."""

    def __init__(self, certs: Certificates, host: str = "localhost") -> None:
        self.calls: list[tuple[str, dict[str, str], bytes]] = []
        routes = [
            Route("/hook", self._hook, methods=["POST"]),
            Route("/internal-admin", self._hook, methods=["POST"]),
            Route("/redirect", self._redirect, methods=["POST"]),
            Route("/big", self._big, methods=["POST"]),
            Route("/slow", self._slow, methods=["POST"]),
        ]
        super().__init__(Starlette(routes=routes), tls=(certs.cert, certs.key), host=host)

    async def _hook(self, request: Request) -> Response:
        self.calls.append((request.url.path, dict(request.headers), await request.body()))
        return Response(status_code=204)

    async def _redirect(self, request: Request) -> Response:
        return RedirectResponse(f"http://127.0.0.1:{self.port}/internal-admin", status_code=307)

    async def _big(self, request: Request) -> Response:
        return Response(b"x" * 5_000_000, status_code=200)

    async def _slow(self, request: Request) -> Response:
        await asyncio.sleep(5)
        return Response(status_code=204)


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "tls", ["localhost", "hooks.test", "127.0.0.1"])


async def test_an_allowed_https_receiver_gets_the_delivery(certs: Certificates) -> None:
    policy = WebhookPolicy(allow_private=["localhost"], max_response_bytes=1024)
    sender = WebhookSender(policy, certs.ca)
    try:
        async with Receiver(certs) as hook:
            answer = await sender.post(
                f"{hook.url}/hook", b'{"turn": 1}', {"Content-Type": "application/json"}
            )
            assert answer.status == 204
            [(path, headers, body)] = hook.calls
            assert path == "/hook" and body == b'{"turn": 1}' and headers["host"] == f"localhost:{hook.port}"
            # The answer is read only up to the bound.
            assert len((await sender.post(f"{hook.url}/big", b"{}", {})).body) == 1024
    finally:
        await sender.close()


async def test_the_connection_goes_to_the_address_that_was_checked(certs: Certificates) -> None:
    """`hooks.test` resolves nowhere for the system; a resolver stand-in answers 127.0.0.1 once: the
    request reaches the receiver there, with the certificate verified for hooks.test (SNI and Host)."""
    answers: list[str] = []

    async def resolver_stand_in(host: str, port: int) -> list[str]:
        answers.append(host)
        return ["127.0.0.1"]

    sender = WebhookSender(WebhookPolicy(allow_private=["hooks.test"]), certs.ca, resolver_stand_in)
    try:
        async with Receiver(certs, host="hooks.test") as hook:
            answer = await sender.post(f"https://hooks.test:{hook.port}/hook", b"{}", {})
        assert answer.status == 204 and answers == ["hooks.test"]
        assert hook.calls[0][1]["host"] == f"hooks.test:{hook.port}"
    finally:
        await sender.close()


async def test_a_rebinding_answer_is_refused_whole(certs: Certificates) -> None:
    async def rebinding_resolver(host: str, port: int) -> list[str]:
        return ["93.184.215.14", "127.0.0.1"]  # one public answer does not excuse an internal one

    sender = WebhookSender(STRICT, certs.ca, rebinding_resolver)
    try:
        with pytest.raises(WebhookRefused, match="loopback"):
            await sender.post("https://hooks.example.com/hook", b"{}", {})
    finally:
        await sender.close()


async def test_names_that_resolve_inside_redirects_and_slow_receivers(certs: Certificates) -> None:
    strict = WebhookSender(STRICT, certs.ca)
    allowed = WebhookSender(
        WebhookPolicy(allow_private=["localhost"], timeout=timedelta(seconds=0.5)), certs.ca
    )
    try:
        async with Receiver(certs) as hook:
            with pytest.raises(WebhookRefused, match=re.escape("resolves to 127.0.0.1, a loopback address")):
                await strict.post(f"{hook.url}/hook", b"{}", {})  # `localhost`, by name
            with pytest.raises(WebhookRefused) as redirected:
                await allowed.post(f"{hook.url}/redirect", b"{}", {})
            assert redirected.value.code == "redirect" and "internal-admin" in str(redirected.value)
            with pytest.raises(TimeoutError):
                await allowed.post(f"{hook.url}/slow", b"{}", {})
            assert hook.calls == []  # nothing reached the receiver's internal route, or any
    finally:
        await strict.close()
        await allowed.close()


def _result(turn_id: str) -> ChatTurnResult:
    return ChatTurnResult(turn_id=turn_id, conversation_id=str(uuid.uuid4()), status="completed", text="hi")


async def test_a_refused_delivery_is_audited_and_final(services: Services, resources: Resources) -> None:
    turn_id = f"turn-webhook-{uuid.uuid4().hex[:8]}"
    activities = WebhookActivities(WebhookSender(STRICT), None, resources.sessions)
    hook = WebhookInput(url="http://127.0.0.1:8097/internal-admin", result=_result(turn_id))
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(activities.notify_webhook, hook)
    assert refused.value.type == "WebhookRefused" and refused.value.non_retryable
    [(action, details)] = db_rows(
        services, "SELECT action, details FROM audit_events WHERE object_id = %s", turn_id
    )
    assert action == "webhook.refused" and details["refused"] == "scheme"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8097/internal-admin",
        "https://10.0.0.8/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]:8443/hook",
        "https://localhost:8443/hook",
    ],
)
async def test_the_api_refuses_such_a_webhook_at_once(api: ApiServer, services: Services, url: str) -> None:
    conv = await api.conversation()
    resp = await api.client.post(
        f"/v1/conversations/{conv}/messages",
        json={"content": "Summarise: batch.", "interactive": False, "webhook_url": url},
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "webhook_refused"
    request_id = resp.headers["x-request-id"]
    [(details,)] = db_rows(services, "SELECT details FROM audit_events WHERE request_id = %s", request_id)
    assert details["refused"] == "webhook_refused" and details["webhook"]["url"] == url
