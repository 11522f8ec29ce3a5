"""Webhook requests that go only where the rules allow (activities/logic/webhook_targets.py).

The host is resolved at delivery time and every address it resolves to is checked; the connection then
goes to the checked address (the Host header and TLS SNI still name the host, so certificates are
verified for it): a DNS answer that changes between the check and the connection (rebinding) cannot
move the request elsewhere. Redirects are never followed, and a receiver gets a bounded time and a
bounded response.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import certifi
import httpx

from activities.logic.webhook_targets import IpAddress, Target, WebhookRefused, check_address, parse_target
from infra.config.webhooks import WebhookPolicy

Resolver = Callable[[str, int], Awaitable[list[str]]]


@dataclass(frozen=True)
class WebhookAnswer:
    status: int
    # The start of the receiver's answer, at most the policy's bound.
    body: bytes


async def resolve(host: str, port: int) -> list[str]:
    """Every address the host resolves to (the system's resolver)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise WebhookRefused("host", f"{host} does not resolve: {exc.strerror}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class WebhookSender:
    def __init__(
        self, policy: WebhookPolicy, ca_file: Path | None = None, resolver: Resolver = resolve
    ) -> None:
        self.policy = policy
        self.resolver = resolver
        trust = ssl.create_default_context(cafile=certifi.where())
        if ca_file is not None:
            trust.load_verify_locations(cafile=str(ca_file))  # receivers under a private CA
        # No proxies from the environment: the request must go to the address that was checked.
        self.http = httpx.AsyncClient(verify=trust, follow_redirects=False, trust_env=False)

    async def target(self, url: str, tenant_hosts: list[str] | None = None) -> tuple[Target, IpAddress]:
        """Where ``url`` would be delivered now, or WebhookRefused: every address must pass."""
        target = parse_target(url, self.policy, tenant_hosts)
        addresses = await self.resolver(target.host, target.port)
        if not addresses:
            raise WebhookRefused("host", f"{target.host} resolves to no address")
        checked = [check_address(target, a, self.policy) for a in addresses]
        return target, checked[0]

    async def post(
        self, url: str, body: bytes, headers: dict[str, str], tenant_hosts: list[str] | None = None
    ) -> WebhookAnswer:
        """POST to the checked address; the answer is read up to the policy's bound."""
        target, address = await self.target(url, tenant_hosts)
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        request = self.http.build_request(
            "POST",
            target.url_to(address),
            content=body,
            headers={**headers, "Host": target.host_header},
            extensions=extensions,
            timeout=self.policy.timeout.total_seconds(),
        )
        async with asyncio.timeout(self.policy.timeout.total_seconds()):
            response = await self.http.send(request, stream=True)
            try:
                if response.is_redirect:
                    where = response.headers.get("location", "?")
                    raise WebhookRefused(
                        "redirect", f"the receiver answered {response.status_code} to {where}: not followed"
                    )
                kept = bytearray()
                async for chunk in response.aiter_raw():
                    kept += chunk[: self.policy.max_response_bytes - len(kept)]
                    if len(kept) >= self.policy.max_response_bytes:
                        break  # the rest is not read
            finally:
                await response.aclose()
        return WebhookAnswer(response.status_code, bytes(kept))

    async def close(self) -> None:
        await self.http.aclose()
