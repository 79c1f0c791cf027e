"""The one check both HTTP servers (dashboard, ingest) use for exposure and credentials, and
who an ingest request names as its sender."""

from __future__ import annotations

import base64

import pytest

from sysmetrics.http_auth import carries_token, is_loopback
from sysmetrics.ingest.server import sender_of
from sysmetrics.ingest.wire import PayloadError


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


@pytest.mark.parametrize(
    ("headers", "sender"),
    [
        ({b"x-sysmetrics-sender": b"otelcol-eu-1"}, ("otelcol-eu-1", True)),
        (
            {b"x-sysmetrics-sender": b"otelcol-eu-1", b"authorization": basic("prom-eu-1", "t")},
            ("otelcol-eu-1", True),
        ),
        ({b"authorization": basic("prom-eu-1", "s3cret")}, ("prom-eu-1", True)),
        # A user name chosen before senders were named, that no label value can hold: not used.
        ({b"authorization": basic("ops team", "s3cret")}, ("10.0.0.7", False)),
        ({b"authorization": basic("", "s3cret")}, ("10.0.0.7", False)),
        ({b"authorization": b"Bearer s3cret"}, ("10.0.0.7", False)),
        ({}, ("10.0.0.7", False)),
    ],
)
def test_a_sender_is_its_header_else_its_basic_user_name_else_its_address(
    headers: dict[bytes, bytes], sender: tuple[str, bool]
) -> None:
    assert sender_of(headers, "10.0.0.7") == sender


def test_a_sender_header_no_label_can_hold_is_refused() -> None:
    with pytest.raises(PayloadError) as refused:
        sender_of({b"x-sysmetrics-sender": b"prom eu 1"}, "10.0.0.7")
    assert (refused.value.kind, refused.value.status) == ("bad_sender", 400)
