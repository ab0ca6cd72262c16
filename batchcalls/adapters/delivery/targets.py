"""Which callback URLs events may be POSTed to: SSRF protection (DESIGN.md §7).

A callback URL must be https (http only when ``BATCHCALLS_ALLOW_HTTP_CALLBACKS`` is on), carry no
credentials, and reach only public addresses, unless its host name or an address it resolves to is
on ``BATCHCALLS_CALLBACK_ALLOWLIST`` (host names, IPs or CIDRs). The API checks it when a batch is
created and the delivery adapter checks it again right before every POST, because a name that
resolved to a public address at submit time may resolve to an internal one later (DNS rebinding).
The check returns the addresses it approved, and the delivery connects to one of them (never
resolving the name again), so the address checked is the address reached.

A public host is reached only on the usual web ports (`PUBLIC_PORTS`): any other port of a public
host is refused unless the host (by name, or every address it resolves to) is on the allowlist,
so that callbacks cannot be aimed at a mail server, a database or an SSH daemon on the Internet.

The only I/O is name resolution, through the `resolve` parameter (`default_resolve` by default);
the delivery bounds it by the POST's deadline (`resolver_until`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from batchcalls.domain.errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

Resolver = Callable[[str, int], list[str]]

_DEFAULT_PORTS = {"http": 80, "https": 443}
# The ports a callback may use on a public host: HTTP's and HTTPS's, and their usual alternates.
PUBLIC_PORTS = frozenset({80, 443, 8080, 8443})


@dataclass(frozen=True)
class CallbackTarget:
    """A callback URL as checked: where to connect and what to tell the server."""

    scheme: str
    host: str  # normalized: lower case, no trailing dot, no brackets; the TLS server name
    port: int
    host_header: str  # `Host`: the URL's host, and its port when not the scheme's default
    path: str  # path and query, as sent in the request line
    # The addresses checked; empty for a host name on the allowlist (any address of it may be
    # reached, so it is not resolved to be checked).
    addresses: tuple[str, ...]


def default_resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, as strings, through ``socket.getaddrinfo``.

    Raises OSError (``socket.gaierror``) or UnicodeError when the name does not resolve.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class ResolveTimeout(TimeoutError):
    """A name's resolution outlived its deadline (`resolver_until`)."""


def resolver_until(resolve: Resolver, deadline: float) -> Resolver:
    """`resolve`, each call given only the time left until `deadline` (``time.monotonic()``);
    past it, `ResolveTimeout`. ``getaddrinfo`` takes no timeout and cannot be interrupted, so
    the resolution runs in a daemon thread of its own that is left behind when time is up (it
    ends when the system resolver gives up)."""

    def resolve_in_time(host: str, port: int) -> list[str]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ResolveTimeout(f"resolving {host!r} outlived the delivery deadline")
        answer: list[list[str]] = []
        failure: list[BaseException] = []

        def run() -> None:
            try:
                answer.append(resolve(host, port))
            except BaseException as exc:  # handed to the caller's thread
                failure.append(exc)

        thread = threading.Thread(target=run, name="resolve-callback-host", daemon=True)
        thread.start()
        thread.join(left)
        if failure:
            raise failure[0]
        if not answer:
            raise ResolveTimeout(f"resolving {host!r} outlived the delivery deadline")
        return answer[0]

    return resolve_in_time


@dataclass(frozen=True)
class _Allowlist:
    hosts: frozenset[str]
    networks: tuple[IPNetwork, ...]


def _normalize_host(host: str) -> str:
    return host.strip().rstrip(".").lower()


@lru_cache(maxsize=64)
def _parse_allowlist(entries: tuple[str, ...]) -> _Allowlist:
    # Cached: the delivery adapter checks before every POST with the same settings.
    hosts: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            hosts.add(_normalize_host(entry))
    return _Allowlist(frozenset(hosts), tuple(networks))


def _as_address(ip: str | IPAddress) -> IPAddress:
    return ip if not isinstance(ip, str) else ipaddress.ip_address(ip.strip("[]"))


def _embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries and may be routed to: mapped, 6to4, Teredo."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    return found


def _is_blocked(ip: IPAddress) -> bool:
    """True for any address that is not plainly public, or that embeds one that is not."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        # Judge a mapped address by its IPv4 form: Python versions disagree on whether
        # ::ffff:0:0/96 itself counts as private.
        return _is_blocked(ip.ipv4_mapped)
    if (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global  # also shared address space (100.64.0.0/10) and the like
    ):
        return True
    return any(_is_blocked(inner) for inner in _embedded_ipv4(ip))


def is_allowed_address(ip: str | IPAddress, allowlist: Sequence[str]) -> bool:
    """True when `ip` is inside an IP or CIDR entry of `allowlist` (host name entries are ignored
    here). An IPv4-mapped IPv6 address also matches through its IPv4 form. A string that is not
    an IP address is False.
    """
    try:
        address = _as_address(ip)
    except ValueError:
        return False
    candidates: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            candidates.append(ipaddress.IPv6Address(str(address).split("%", 1)[0]))
        if address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
    networks = _parse_allowlist(tuple(allowlist)).networks
    return any(a in n for a in candidates for n in networks if a.version == n.version)


def _refuse(reason: str) -> InvalidRequest:
    message = f"callback_url {reason}"
    return InvalidRequest(message, {"callback_url": [message]})


def _parse_target(url: str, *, allow_http: bool) -> CallbackTarget:
    """The URL's parts, refused (`InvalidRequest`) when its form alone makes it unsafe; no
    resolution, no allowlist."""
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise _refuse("must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise _refuse(f"is not a valid URL ({e})") from e
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise _refuse("must be an https URL")
    if scheme == "http" and not allow_http:
        raise _refuse("must use https (plain http callbacks are disabled)")
    if "@" in parts.netloc:
        raise _refuse("must not contain a user name or password")
    host = _normalize_host(parts.hostname or "")
    if not host:
        raise _refuse("has no host")
    default_port = _DEFAULT_PORTS[scheme]
    if port is None:
        port = default_port
    display = f"[{host}]" if ":" in host else host
    return CallbackTarget(
        scheme=scheme,
        host=host,
        port=port,
        host_header=display if port == default_port else f"{display}:{port}",
        path=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
        addresses=(),
    )


def check_callback_url(
    url: str,
    *,
    allow_http: bool,
    allowlist: Sequence[str],
    resolve: Resolver = default_resolve,
) -> CallbackTarget:
    """Raise `InvalidRequest` (details ``{"callback_url": [message]}``) unless events may be
    POSTed to `url`; else return where to connect.

    Refused: a scheme other than https (or http, when `allow_http`); no host; user info; a bad
    port; a host that is, or resolves to, any address that is private, loopback, link-local,
    multicast, reserved, unspecified or otherwise not global, including such an address inside
    an IPv4-mapped, 6to4 or Teredo IPv6 address; a host that does not resolve. A host name on
    `allowlist` is accepted without resolving it; an address inside an allowlisted IP or CIDR is
    accepted whatever its kind. A port outside `PUBLIC_PORTS` is refused unless the host name is
    on `allowlist` or every address it resolves to is.

    Cheap enough to run before every delivery: parsing, one resolution, a cached allowlist.
    An HTTP client that resolved the name again might get another answer: connect to one of the
    returned `addresses` (`connect_addresses`).
    """
    target = _parse_target(url, allow_http=allow_http)
    host, port = target.host, target.port

    if host in _parse_allowlist(tuple(allowlist)).hosts:
        return target

    try:
        literal: IPAddress | None = _as_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            resolved = resolve(host, port)
        except ResolveTimeout:
            raise  # not the name's fault: the delivery says so, and tries again later
        except (OSError, UnicodeError) as e:
            raise _refuse(f"host {host!r} does not resolve") from e
        if not resolved:
            raise _refuse(f"host {host!r} does not resolve")
        try:
            addresses = [_as_address(a) for a in resolved]
        except ValueError as e:
            raise _refuse(f"host {host!r} resolves to an invalid address") from e

    for address in addresses:
        if _is_blocked(address) and not is_allowed_address(address, allowlist):
            if literal is not None:
                raise _refuse(f"must not point at a non-public address ({address})")
            raise _refuse(f"host {host!r} resolves to a non-public address ({address})")
    if port not in PUBLIC_PORTS and not all(is_allowed_address(a, allowlist) for a in addresses):
        ports = ", ".join(str(p) for p in sorted(PUBLIC_PORTS))
        raise _refuse(
            f"port {port} is not allowed on a public host (only {ports}, unless the host is on"
            " BATCHCALLS_CALLBACK_ALLOWLIST)"
        )
    return dataclasses.replace(target, addresses=tuple(str(a) for a in addresses))


def connect_addresses(target: CallbackTarget, resolve: Resolver = default_resolve) -> tuple[str, ...]:
    """The addresses to connect to for a checked target, in order: the ones checked, or (a host
    name on the allowlist, whose every address may be reached) the ones it resolves to.

    Raises OSError or UnicodeError when an allowlisted name does not resolve (`ResolveTimeout`
    when it does not in time)."""
    if target.addresses:
        return target.addresses
    resolved = tuple(resolve(target.host, target.port))
    if not resolved:
        raise OSError(f"host {target.host!r} does not resolve")
    return resolved
