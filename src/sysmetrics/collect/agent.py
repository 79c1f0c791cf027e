"""The collector process: sample, spool, publish and serve /metrics until SIGINT/SIGTERM.

`sysmetrics collect` reads and validates the settings, then on POSIX replaces itself with
``python -m sysmetrics.collect.agent`` (``os.execv``: the same PID, so systemd and launchd see
one process), handing the settings over a pipe, the secret never in argv or the environment.
The process that runs for months then holds only what sampling and publishing need, not the
CLI and settings libraries. Windows has no exec: there it runs in the CLI's process.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from typing import NoReturn

from sysmetrics.collect import slim_kafka  # noqa: F401  before anything imports confluent_kafka

# isort: split

from confluent_kafka import KafkaException

from sysmetrics.collect.loop import run_collector
from sysmetrics.collect.settings import CollectorSettings
from sysmetrics.logs import configure_logging
from sysmetrics.observability import serve_metrics
from sysmetrics.stop_signals import install_stop_signals
from sysmetrics.stream.admin import ensure_topic_meanwhile
from sysmetrics.stream.kafka_config import settings_refused


def run(settings: CollectorSettings, max_samples: int | None) -> str:
    """Collect until stopped (or ``max_samples``); the closing summary line."""
    ensure_topic_meanwhile(settings, lambda line: print(f"warning: {line}", file=sys.stderr))
    stop = threading.Event()
    install_stop_signals(stop)
    metrics = serve_metrics("collect", [], settings.metrics_addr, settings.metrics_port)
    try:
        producer = run_collector(settings, stop, max_samples, metrics=metrics)
    finally:
        metrics.close()
    collected = producer.stats.spooled + producer.stats.refused
    return (
        f"collected {collected} sample{'' if collected == 1 else 's'}, "
        f"delivered {producer.stats.delivered}, {producer.spool.pending} waiting in the spool, "
        f"{producer.spool.dropped} dropped, {producer.stats.refused} not spooled (a full disk), "
        f"{producer.stats.lost} lost, {producer.stats.set_aside} set aside (over Kafka's size "
        "limit)"
    )


def become_collector(settings: CollectorSettings, max_samples: int | None) -> NoReturn:
    """Replace this process with the collector process, handing it ``settings``."""
    handed = {
        "settings": settings.to_plain(),
        "max_samples": max_samples,
        "log_level": logging.getLogger().level,
    }
    read_end, write_end = os.pipe()
    os.write(write_end, json.dumps(handed).encode())  # a few hundred bytes: under a pipe's buffer
    os.close(write_end)
    os.set_inheritable(read_end, True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "sysmetrics.collect.agent", str(read_end)])


def main(argv: list[str]) -> None:
    with os.fdopen(int(argv[1]), "rb") as pipe:
        handed = json.loads(pipe.read())
    configure_logging(handed["log_level"])
    settings = CollectorSettings.from_plain(handed["settings"])
    try:
        print(run(settings, handed["max_samples"]), flush=True)
    except KafkaException as exc:
        refused = settings_refused(exc)
        if refused is None:
            raise
        print(f"Error: {refused}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv)
