"""The collector loop: sample on wall-clock-aligned ticks and publish through the spool."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator

from sysmetrics.collect.host import host_id_warning
from sysmetrics.collect.sampler import Sampler
from sysmetrics.collect.settings import CollectorSettings
from sysmetrics.observability import MetricsEndpoint
from sysmetrics.schema import encode
from sysmetrics.stop_signals import install_stop_signals
from sysmetrics.stream.producer import SpooledProducer

log = logging.getLogger(__name__)


def next_tick(now: float, interval_s: float) -> float:
    """The next multiple of ``interval_s`` after ``now`` (epoch seconds): no drift over hours."""
    return (math.floor(now / interval_s) + 1) * interval_s


def ticks(
    interval_s: float,
    stop: threading.Event,
    max_samples: int | None,
    between: Callable[[float], object],
) -> Iterator[int]:
    """The sampling clock of every collector loop: yields 1, 2, … at each multiple of
    ``interval_s`` until ``stop`` is set or ``max_samples`` were taken; ``between(seconds
    left)`` waits in between (and may return early: it is called again)."""
    taken = 0
    while not stop.is_set() and (max_samples is None or taken < max_samples):
        tick = next_tick(time.time(), interval_s)
        while not stop.is_set() and (wait := tick - time.time()) > 0:
            if wait > interval_s:
                # The wall clock stepped back (NTP, a resumed VM): the next tick of the new
                # time, not a silence as long as the step.
                tick = next_tick(time.time(), interval_s)
                continue
            between(wait)
        if stop.is_set():
            return
        taken += 1
        yield taken


def run_collector(
    settings: CollectorSettings,
    stop: threading.Event,
    max_samples: int | None = None,
    on_sample: Callable[[int], None] | None = None,
    metrics: MetricsEndpoint | None = None,
) -> SpooledProducer:
    """Sample every ``settings.sample_interval_s`` until ``stop`` is set; return the producer.
    ``metrics``: the endpoint that serves the producer's numbers."""
    sampler = Sampler(settings.sysfs_root, settings.host_id, settings.sample_interval_s)
    producer = SpooledProducer(settings, settings.data_dir / "spool" / sampler.host.host_id)
    if metrics is not None:
        metrics.add(producer.readings)
    key = sampler.host.host_id.encode()
    log.info(
        "collecting host %s (%s) every %.1fs to %s topic %s",
        sampler.host.host_id,
        sampler.host.hostname,
        settings.sample_interval_s,
        settings.bootstrap_servers,
        producer.topic,
    )
    if (warning := host_id_warning(settings.sysfs_root, settings.host_id)) is not None:
        log.warning("host id %s: %s", sampler.host.host_id, warning)

    def between_samples(wait: float) -> None:
        if producer.idle:
            # Nothing to deliver: sleep to the tick instead of polling the client (its poll
            # wakes every 200 ms); the client's own events are served at the next tick.
            stop.wait(wait)
            producer.poll(0)
        else:
            producer.poll(min(wait, 0.5))

    try:
        for taken in ticks(settings.sample_interval_s, stop, max_samples, between_samples):
            message = encode(sampler.sample())
            try:
                producer.publish(key, message)
            except OSError as exc:
                # A full disk is when a machine most needs watching (its disk usage is in this
                # very sample): keep sampling and send what the spool refused without it.
                log.error(
                    "cannot spool the sample (%s): sending it without the spool, at most once "
                    "(%d so far); free space in %s",
                    exc,
                    producer.stats.refused,
                    producer.spool.directory,
                )
                producer.publish_unspooled(key, message)
            if on_sample is not None:
                on_sample(taken)
        producer.poll(0)
    finally:
        producer.close(timeout_s=10.0)
    return producer


def print_samples(
    settings: CollectorSettings,
    max_samples: int | None,
    write: Callable[[str], None],
    once: bool = False,
) -> None:
    """`collect --print`: the same samples as JSON lines to ``write``, no Kafka; ``once``
    samples at once instead of at the next tick (CPU % needs only a short first interval)."""
    sampler = Sampler(settings.sysfs_root, settings.host_id, settings.sample_interval_s)
    if once:
        time.sleep(0.2)
        write(encode(sampler.sample()).decode())
        return
    printing = threading.Event()
    install_stop_signals(printing)
    for _ in ticks(settings.sample_interval_s, printing, max_samples, printing.wait):
        write(encode(sampler.sample()).decode())
