"""Where a webhook may go: the URL's rules, and the addresses its host resolves to.

A webhook is a request turnflow's workers make to a URL a tenant chose, from inside the deployment's
network: without these rules it reaches Postgres, Redis, Temporal, the model pools or the cloud's
metadata address (server-side request forgery). So: https only (plain http only to hosts the policy
lists), no credentials in the URL, only the hosts the tenant allows (if it lists any), and every
address the host resolves to must be public unless the policy allows that host or network.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from infra.config.webhooks import WebhookPolicy

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookRefused(ValueError):
    """``code``: scheme, credentials, host, tenant_host, address or redirect."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    # Path and query, as sent.
    path: str

    def url_to(self, address: IpAddress) -> str:
        """The URL with the checked address in place of the host (the connection goes there)."""
        literal = f"[{address}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{literal}:{self.port}{self.path}"

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


def _host_matches(host: str, patterns: list[str]) -> bool:
    """An exact host, or `*.example.com` for its subdomains."""
    for pattern in patterns:
        pattern = pattern.lower()
        if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return True
    return False


def parse_target(url: str, policy: WebhookPolicy, tenant_hosts: list[str] | None = None) -> Target:
    """The URL's target, or WebhookRefused saying which rule it breaks."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookRefused("url", f"webhook_url is not a URL: {exc}") from exc
    host = (parts.hostname or "").lower()
    if not host:
        raise WebhookRefused("url", "webhook_url has no host")
    if parts.scheme == "http" and not _host_matches(host, policy.allow_http_hosts):
        raise WebhookRefused("scheme", f"webhooks must use https ({host} is not allowed plain http)")
    if parts.scheme not in ("http", "https"):
        raise WebhookRefused("scheme", f"webhooks must use https, not {parts.scheme or 'no scheme'}")
    if parts.username is not None or parts.password is not None:
        raise WebhookRefused("credentials", "webhook_url must not carry credentials; use the signature")
    if tenant_hosts and not _host_matches(host, tenant_hosts):
        raise WebhookRefused("tenant_host", f"{host} is not among the tenant's webhook hosts")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path)


def _kind(address: IpAddress) -> str | None:
    """Why the address is internal, or None for a public one."""
    for kind, internal in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),  # before private: Python counts 240.0.0.0/4 as both
        ("private", address.is_private),
    ):
        if internal:
            return kind
    return None if address.is_global else "not globally routable"


def unwrap(address: IpAddress) -> IpAddress:
    """IPv4 inside IPv6 (`::ffff:127.0.0.1`, 6to4, Teredo) is judged as the IPv4 address it reaches."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if inner is not None:
            return inner
    return address


def check_address(target: Target, address: str, policy: WebhookPolicy) -> IpAddress:
    """The address to connect to, or WebhookRefused when it is internal and not allowed."""
    ip = unwrap(ipaddress.ip_address(address.split("%", 1)[0]))
    kind = _kind(ip)
    if kind is None or _host_matches(target.host, policy.allow_private):
        return ip
    for allowed in policy.allow_private:
        try:
            if ip in ipaddress.ip_network(allowed, strict=False):
                return ip
        except ValueError:
            continue  # a host name, not a network
    raise WebhookRefused("address", f"{target.host} resolves to {ip}, a {kind} address")
