"""Where `sysmetrics status`, `up` and the receiver's log say it listens."""

from __future__ import annotations

from pathlib import Path

from sysmetrics.config import Settings
from sysmetrics.ingest.status import receiver_url


def test_the_receivers_url_names_its_scheme_and_brackets_an_ipv6_address(tmp_path: Path) -> None:
    assert receiver_url(Settings(ingest_port=4318)) == "http://127.0.0.1:4318"
    tls = {"ingest_tls_cert": tmp_path / "c.pem", "ingest_tls_key": tmp_path / "k.pem"}
    assert receiver_url(Settings(ingest_host="0.0.0.0", **tls)) == "https://0.0.0.0:4318"
    assert receiver_url(Settings(ingest_host="::", ingest_port=9)) == "http://[::]:9"
