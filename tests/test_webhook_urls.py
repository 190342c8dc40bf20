"""Where a webhook may send (app/services/webhook_urls.py), as a unit: host names resolve
through a stub, so no test asks a DNS server or opens a connection anywhere."""

from __future__ import annotations

import ipaddress
import re

import pytest

from app.config import AppEnv, Settings
from app.services.webhook_urls import UnsafeUrl, check_url, is_public
from tests.helpers import make_settings

PUBLIC = "93.184.215.14"


def resolving(*addresses: str):
    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


async def unreachable(host: str, port: int) -> list[str]:
    raise OSError("Name or service not known")


@pytest.fixture
def strict() -> Settings:
    return make_settings(webhook_allow_private_networks=False)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
    ],
)
def test_addresses_of_this_machine_and_private_networks_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", [PUBLIC, "8.8.8.8", "2606:4700:4700::1111"])
def test_internet_addresses_are_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


async def test_a_host_resolving_to_a_private_address_is_refused(strict: Settings) -> None:
    with pytest.raises(UnsafeUrl, match=re.escape("10.1.2.3")):
        await check_url("https://hooks.example.com/x", strict, resolve=resolving("10.1.2.3"))


async def test_a_host_with_one_private_address_among_public_ones_is_refused(
    strict: Settings,
) -> None:
    """Else the connection could pick the private one."""
    with pytest.raises(UnsafeUrl, match=re.escape("127.0.0.1")):
        await check_url(
            "https://hooks.example.com/x", strict, resolve=resolving(PUBLIC, "127.0.0.1")
        )


async def test_a_host_resolving_to_public_addresses_is_accepted(strict: Settings) -> None:
    target = await check_url("https://hooks.example.com:8443/x", strict, resolve=resolving(PUBLIC))
    assert (target.host, target.port) == ("hooks.example.com", 8443)


async def test_a_host_that_does_not_resolve_is_refused(strict: Settings) -> None:
    with pytest.raises(UnsafeUrl, match="does not resolve"):
        await check_url("https://nowhere.invalid/x", strict, resolve=unreachable)


async def test_a_literal_address_is_checked_without_resolving(strict: Settings) -> None:
    with pytest.raises(UnsafeUrl, match=re.escape("169.254.169.254")):
        await check_url("http://169.254.169.254/latest/meta-data", strict, resolve=unreachable)


async def test_a_bracketed_ipv6_loopback_is_refused(strict: Settings) -> None:
    with pytest.raises(UnsafeUrl, match="::1"):
        await check_url("http://[::1]:8080/x", strict, resolve=unreachable)


async def test_private_networks_are_allowed_when_the_setting_says_so() -> None:
    allowing = make_settings(webhook_allow_private_networks=True)
    target = await check_url("http://127.0.0.1:9/x", allowing, resolve=unreachable)
    assert target.host == "127.0.0.1"


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "file:///etc/passwd", "example.com/x", "https:///x"]
)
async def test_only_http_and_https_urls_with_a_host_are_taken(strict: Settings, url: str) -> None:
    with pytest.raises(UnsafeUrl):
        await check_url(url, strict, resolve=resolving(PUBLIC))


async def test_plain_http_is_refused_in_production() -> None:
    production = make_settings().model_copy(update={"app_env": AppEnv.PRODUCTION})
    with pytest.raises(UnsafeUrl, match="https://"):
        await check_url("http://hooks.example.com/x", production, resolve=resolving(PUBLIC))


async def test_plain_http_is_allowed_in_production_with_webhook_allow_http() -> None:
    production = make_settings(webhook_allow_http=True).model_copy(
        update={"app_env": AppEnv.PRODUCTION}
    )
    await check_url("http://hooks.example.com/x", production, resolve=resolving(PUBLIC))


async def test_plain_http_can_be_refused_outside_production_too() -> None:
    settings = make_settings(webhook_allow_http=False)
    with pytest.raises(UnsafeUrl, match="https://"):
        await check_url("http://hooks.example.com/x", settings, resolve=resolving(PUBLIC))
