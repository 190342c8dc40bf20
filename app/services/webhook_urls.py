"""Where a webhook may send (issue 15): not into the network the server sits in.

A subscription's URL is chosen by whoever holds a superuser's token, and the server then makes
requests to it from inside the network: without a rule, a webhook reads cloud metadata
(169.254.169.254), the database's admin port or anything else on 10.x. So unless
WEBHOOK_ALLOW_PRIVATE_NETWORKS is set, every address the host resolves to must be a public
one: loopback, private, shared (CGNAT), link-local, multicast, reserved and unspecified
addresses are refused, IPv4-mapped IPv6 ones as the IPv4 address they are. The check runs at
creation and again before every delivery, because what a name resolves to can change.

Resolution is a call out of the process: callers run it outside any transaction. `resolve` is
a parameter so that the rule can be tested without a DNS server.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.config import Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]


class UnsafeUrl(ValueError):
    """The URL may not be a webhook's: the message says why, in words for the caller."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def is_public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not (
        address.is_multicast
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_unspecified
    )


def parse_target(url: str, settings: Settings) -> Target:
    """The scheme, host and port of a URL a webhook may have, as far as its text tells."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrl("is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeUrl("must be an http:// or https:// URL")
    if scheme == "http" and not settings.webhooks_may_use_http:
        raise UnsafeUrl("must be an https:// URL (WEBHOOK_ALLOW_HTTP is off)")
    if not parts.hostname:
        raise UnsafeUrl("must name a host")
    if parts.fragment:
        raise UnsafeUrl("must not have a #fragment")
    return Target(scheme, parts.hostname, port or (443 if scheme == "https" else 80))


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def check_url(url: str, settings: Settings, *, resolve: Resolver = system_resolver) -> Target:
    """The URL's target, if a webhook may send to it now; UnsafeUrl else (a host that does not
    resolve included)."""
    target = parse_target(url, settings)
    if settings.webhook_allow_private_networks:
        return target
    literal = _literal(target.host)
    if literal is not None:
        addresses: list[Address] = [literal]
    else:
        try:
            found = await resolve(target.host, target.port)
        except (OSError, UnicodeError):
            raise UnsafeUrl(f"names a host that does not resolve ({target.host})") from None
        addresses = [a for a in map(_literal, found) if a is not None]
        if not addresses:
            raise UnsafeUrl(f"names a host that does not resolve ({target.host})")
    refused = [a for a in addresses if not is_public(a)]
    if refused:
        raise UnsafeUrl(
            f"resolves to {refused[0]}, an address of this machine or of a private network "
            "(WEBHOOK_ALLOW_PRIVATE_NETWORKS is off)"
        )
    return target
