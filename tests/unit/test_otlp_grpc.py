"""Who sent an OTLP/gRPC request: the address in grpcio's peer string."""

from __future__ import annotations

import pytest

from sysmetrics.ingest.otlp_grpc import peer_address


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:10.0.0.5:41234", "10.0.0.5"),
        ("ipv6:[::1]:41234", "::1"),
        ("ipv6:%5B2001:db8::7%5D:5000", "2001:db8::7"),  # as grpcio writes it, percent-encoded
        ("unix:/run/sysmetrics.sock", None),
        ("", None),
    ],
)
def test_the_sender_address_is_read_from_the_peer(peer: str, address: str | None) -> None:
    assert peer_address(peer) == address
