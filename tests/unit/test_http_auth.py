"""The one check both HTTP servers (dashboard, ingest) use for exposure and credentials."""

from __future__ import annotations

import base64

import pytest

from sysmetrics.http_auth import carries_token, is_loopback


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("127.example.com", False),  # a name that only starts like loopback
        ("metrics.internal", False),
    ],
)
def test_loopback_is_an_address_not_a_prefix(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        (b"Bearer s3cret", True),
        (b"bearer s3cret ", True),
        (basic("prometheus", "s3cret"), True),
        (basic("", "s3cret"), True),
        (b"Bearer s3cre", False),
        (b"Bearer s3cret2", False),
        (basic("s3cret", "wrong"), False),  # the token as user name is not the password
        (b"Basic !!!not-base64", False),
        (b"Token s3cret", False),
        (b"", False),
    ],
)
def test_token_as_bearer_or_basic_password(header: bytes, accepted: bool) -> None:
    assert carries_token(header, b"s3cret") is accepted
