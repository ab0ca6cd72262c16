"""The failed-authentication budget's subject for a client address."""

from __future__ import annotations

import pytest

from api.ratelimit import client_subject


@pytest.mark.parametrize(
    ("address", "subject"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2:0:0:0:9", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        (None, "unknown"),
        ("", "unknown"),
        ("unix-socket", "unix-socket"),
    ],
)
def test_an_ipv6_client_is_counted_by_its_64_and_an_ipv4_one_by_its_address(address: str | None, subject: str) -> None:
    assert client_subject(address) == subject


def test_two_addresses_of_one_64_share_a_budget_and_neighbouring_64s_do_not() -> None:
    assert client_subject("2001:db8:0:1::a") == client_subject("2001:db8:0:1:1234:5678:9abc:def0")
    assert client_subject("2001:db8:0:1::a") != client_subject("2001:db8:0:2::a")
    assert client_subject("192.0.2.1") != client_subject("192.0.2.2")
