from __future__ import annotations

from collections.abc import Callable

import pytest

from batchcalls.adapters.delivery.targets import check_callback_url, connect_addresses, is_allowed_address
from batchcalls.domain.errors import InvalidRequest

PUBLIC = "93.184.216.34"


def resolver(mapping: dict[str, list[str]]) -> Callable[[str, int], list[str]]:
    def resolve(host: str, port: int) -> list[str]:
        if host not in mapping:
            raise OSError(f"unknown host {host}")
        return mapping[host]

    return resolve


def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"resolved {host} but should not have")


def refused(
    url: str,
    *,
    allow_http: bool = False,
    allowlist: tuple[str, ...] = (),
    resolve: Callable[[str, int], list[str]] = no_dns,
) -> str:
    with pytest.raises(InvalidRequest) as info:
        check_callback_url(url, allow_http=allow_http, allowlist=allowlist, resolve=resolve)
    assert list(info.value.details) == ["callback_url"]
    assert info.value.details["callback_url"] == [info.value.message]
    return info.value.message


def test_https_public_host_is_accepted() -> None:
    seen: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        seen.append((host, port))
        return [PUBLIC]

    check_callback_url("https://Example.com./hooks?x=1", allow_http=False, allowlist=(), resolve=resolve)
    assert seen == [("example.com", 443)]


def test_http_is_refused_unless_allowed() -> None:
    resolve = resolver({"example.com": [PUBLIC]})
    assert "https" in refused("http://example.com/hooks", resolve=resolve)
    check_callback_url("http://example.com/hooks", allow_http=True, allowlist=(), resolve=resolve)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://example.com",
        "example.com/hooks",
        "javascript:alert(1)",
    ],
)
def test_other_schemes_are_refused(url: str) -> None:
    refused(url, allow_http=True)


@pytest.mark.parametrize(
    "url",
    [
        "https://",
        "https:///path",
        "https://:443/",
        "https://user@example.com/",
        "https://user:pw@example.com/",
        "https://example.com:99999/",
        "https://example.com:abc/",
        "https://exa mple.com/",
        "https://example.com/\n",
    ],
)
def test_malformed_urls_are_refused(url: str) -> None:
    refused(url, resolve=resolver({"example.com": [PUBLIC]}))


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "::1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "ff02::1",
        "fe80::1",
        "fc00::1",
        "100.64.0.1",
        "240.0.0.1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "2002:7f00:1::1",
    ],
)
def test_non_public_addresses_are_refused_as_literal_and_resolved(address: str) -> None:
    literal = f"[{address}]" if ":" in address else address
    assert "non-public" in refused(f"https://{literal}/hooks")
    assert "non-public" in refused("https://evil.example/hooks", resolve=resolver({"evil.example": [address]}))


def test_one_private_address_among_public_ones_is_refused() -> None:
    refused("https://mixed.example/", resolve=resolver({"mixed.example": [PUBLIC, "10.0.0.7"]}))


def test_mapped_public_address_is_accepted() -> None:
    check_callback_url(f"https://[::ffff:{PUBLIC}]/", allow_http=False, allowlist=(), resolve=no_dns)


def test_resolution_failure_and_empty_answer_are_refused() -> None:
    assert "does not resolve" in refused("https://nowhere.example/", resolve=resolver({}))
    assert "does not resolve" in refused("https://empty.example/", resolve=resolver({"empty.example": []}))


def test_allowlisted_ip_accepts_loopback() -> None:
    check_callback_url("http://127.0.0.1:8080/hooks", allow_http=True, allowlist=("127.0.0.1",), resolve=no_dns)
    check_callback_url("https://[::ffff:127.0.0.1]/", allow_http=False, allowlist=("127.0.0.1",), resolve=no_dns)
    refused("https://127.0.0.2/", allowlist=("127.0.0.1",))


def test_allowlisted_cidr_accepts_resolved_private_addresses() -> None:
    resolve = resolver({"crm.internal": ["10.20.30.40", "10.20.1.1"]})
    check_callback_url("https://crm.internal/hooks", allow_http=False, allowlist=("10.20.0.0/16",), resolve=resolve)
    refused("https://crm.internal/hooks", allowlist=("10.21.0.0/16",), resolve=resolve)


def test_allowlisted_host_name_is_accepted_without_resolving() -> None:
    check_callback_url(
        "http://LocalHost/hooks",
        allow_http=True,
        allowlist=(" localhost ", "10.0.0.0/8"),
        resolve=no_dns,
    )


def test_is_allowed_address() -> None:
    allowlist = ("127.0.0.1", "10.0.0.0/8", "fd00::/8", "crm.internal")
    assert is_allowed_address("127.0.0.1", allowlist)
    assert is_allowed_address("10.9.8.7", allowlist)
    assert is_allowed_address("::ffff:10.9.8.7", allowlist)
    assert is_allowed_address("fd12::1", allowlist)
    assert not is_allowed_address("127.0.0.2", allowlist)
    assert not is_allowed_address("crm.internal", allowlist)
    assert not is_allowed_address("not an ip", allowlist)
    assert not is_allowed_address("10.0.0.1", ())


@pytest.mark.parametrize("port", [22, 25, 5432, 6379, 8000, 65535])
def test_public_host_on_an_unusual_port_is_refused(port: int) -> None:
    resolve = resolver({"example.com": [PUBLIC]})
    message = refused(f"https://example.com:{port}/hooks", resolve=resolve)
    assert f"port {port}" in message and "BATCHCALLS_CALLBACK_ALLOWLIST" in message
    refused(f"https://{PUBLIC}:{port}/hooks")


@pytest.mark.parametrize("port", [80, 443, 8080, 8443])
def test_public_host_on_a_web_port_is_accepted(port: int) -> None:
    resolve = resolver({"example.com": [PUBLIC]})
    check_callback_url(f"https://example.com:{port}/hooks", allow_http=False, allowlist=(), resolve=resolve)


def test_allowlisted_host_may_use_any_port() -> None:
    resolve = resolver({"crm.example.com": [PUBLIC]})
    check_callback_url(
        "https://crm.example.com:9443/h", allow_http=False, allowlist=("crm.example.com",), resolve=no_dns
    )
    check_callback_url("https://crm.example.com:9443/h", allow_http=False, allowlist=(f"{PUBLIC}/32",), resolve=resolve)
    check_callback_url("http://127.0.0.1:54321/hooks", allow_http=True, allowlist=("127.0.0.1",), resolve=no_dns)
    # One address of the name outside the allowlist: the port is refused.
    two = resolver({"crm.example.com": [PUBLIC, "93.184.216.35"]})
    refused("https://crm.example.com:9443/h", allowlist=(f"{PUBLIC}/32",), resolve=two)


def test_the_check_returns_the_addresses_it_approved() -> None:
    target = check_callback_url(
        "https://Example.com.:8443/a/b?token=x",
        allow_http=False,
        allowlist=(),
        resolve=resolver({"example.com": [PUBLIC, "2606:2800:220:1::1"]}),
    )
    assert target.addresses == (PUBLIC, "2606:2800:220:1::1")
    assert (target.scheme, target.host, target.port) == ("https", "example.com", 8443)
    assert (target.host_header, target.path) == ("example.com:8443", "/a/b?token=x")
    assert connect_addresses(target, no_dns) == (PUBLIC, "2606:2800:220:1::1")
    v6 = check_callback_url("https://[2606:2800:220:1::1]", allow_http=False, allowlist=(), resolve=no_dns)
    assert (v6.host_header, v6.path, v6.addresses) == ("[2606:2800:220:1::1]", "/", ("2606:2800:220:1::1",))


def test_an_allowlisted_name_is_resolved_only_to_connect() -> None:
    target = check_callback_url(
        "http://crm.internal:8080/h", allow_http=True, allowlist=("crm.internal",), resolve=no_dns
    )
    assert target.addresses == ()
    assert connect_addresses(target, resolver({"crm.internal": ["10.1.2.3", "10.1.2.4"]})) == ("10.1.2.3", "10.1.2.4")
    with pytest.raises(OSError):
        connect_addresses(target, resolver({"crm.internal": []}))
