"""Numbers from a sysmetrics process's own /metrics, as Prometheus would scrape them."""

from __future__ import annotations

import urllib.request


def metric(port: int, name: str) -> float | None:
    """A number from a process's /metrics, None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return None
