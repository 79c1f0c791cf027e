"""Rules evaluated per host as samples arrive, with Prometheus' alert states.

A threshold rule is *pending* from the first sample where its comparison holds, *firing* once
it has held for ``for`` of event time (the samples' own timestamps, so a backlog replayed after
an outage gives the same alerts), and *resolved* at the first sample where it no longer holds,
or, with ``keep_firing_for``, once that long has passed since that first sample (Prometheus'
``KeepFiringSince``; the tests check these times with `promtool test rules`). An absent rule
(host down) runs on the evaluator's clock: it fires when the evaluator, listening, heard no
sample of a host for ``intervals`` of its sample interval (never less than
``HOST_DOWN_MIN_SILENCE_S``) and resolves when the host reports again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal

from sysmetrics.alerts.rules import COMPARISONS, METRICS, Rule
from sysmetrics.schema import MetricsEvent

HOST_DOWN_MIN_SILENCE_S = 5.0
"""Below this the silence is the pipeline's own (the producer's linger, the consumer's batches,
the once-a-second check), not the host's: a host declaring a millisecond interval would be
paged down and back between every two of its samples."""
RETIRED_KEPT_S = 3600.0
"""How long a retired host's retirement time is kept to recognise its late samples: longer
than a sender's delivery of a scrape takes (the ingest's assembly wait, a shard's backlog)."""


@dataclass
class Alert:
    """One rule on one host, while pending or firing (inactive alerts are not kept)."""

    rule: str
    host_id: str
    hostname: str
    state: Literal["pending", "firing"]
    active_since: datetime
    last_true: datetime
    value: float | None = None
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    keep_firing_since: datetime | None = None
    """First sample, while firing, where the rule stopped holding (``keep_firing_for``)."""
    partition: int | None = None
    """The topic partition the host's samples come from: its evaluator owns the alert."""
    sender: str | None = None
    """A host-down alert's: who delivered the host's samples (a central Prometheus or OTel
    Collector through ``sysmetrics ingest``), a label, so that one sender's outage can be routed
    as one. Fixed when it fires: a label that changed would make it another alert."""

    @property
    def fingerprint(self) -> str:
        return f"{self.rule}|{self.host_id}"

    def to_json(self) -> dict[str, Any]:
        data = _without_none(asdict(self), "sender")
        for key in _TIMES:
            data[key] = data[key].isoformat() if data[key] else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Alert:
        data = _known_fields(cls, data)
        for key in _TIMES:
            data[key] = datetime.fromisoformat(data[key]) if data.get(key) else None
        return cls(**data)


def _without_none(data: dict[str, Any], *optional: str) -> dict[str, Any]:
    """A state record without the optional fields that are None: evaluators from before a
    field was added cannot read a record that carries it."""
    for key in optional:
        if data.get(key) is None:
            data.pop(key, None)
    return data


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """A state record's fields this version knows: one written by a newer evaluator (a
    rolling upgrade, a rollback) is read, not refused."""
    known = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in known}


def of_topic(record: dict[str, Any], topic: str) -> bool:
    """Whether a state record belongs to the evaluators of metrics ``topic``: each record names
    the topic its host's samples came from (``topic``, since 2026-12-06; one without it is taken
    as ours, as every reader took it before). Two pipelines on one cluster share the state
    topic by default: an evaluator restored the other's hosts, and paged them down."""
    return record.get("topic") in (None, topic)


_TIMES = ("active_since", "last_true", "fired_at", "resolved_at", "keep_firing_since")


@dataclass
class Change:
    """A notification-worthy change: an alert started firing, or resolved."""

    status: Literal["firing", "resolved"]
    alert: Alert


@dataclass
class KnownHost:
    """A host an evaluator has heard from, as the state topic keeps it."""

    host_id: str
    hostname: str
    interval_s: float
    partition: int | None
    sender: str | None = None
    """Who delivered its samples when it was first heard (``Alert.sender``)."""

    KEY_PREFIX = "@host|"
    """State-topic keys of hosts; rule names cannot start with '@'."""
    FORGET_PREFIX = "@forget|"
    """A tombstone under this key and a host id: an administrator retired the host
    (``sysmetrics alert --forget``); the evaluator that holds it forgets it at once. A tombstone,
    so that every reader of the state topic, older versions too, skips it as a deletion."""

    @classmethod
    def key_of(cls, host_id: str) -> str:
        return f"{cls.KEY_PREFIX}{host_id}"

    def to_json(self) -> dict[str, Any]:
        return _without_none(asdict(self), "sender")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KnownHost:
        return cls(**_known_fields(cls, data))


@dataclass
class _Seen:
    hostname: str
    interval_s: float
    arrived: float  # the evaluator's clock at the host's last sample
    partition: int | None = None
    sender: str | None = None


@dataclass
class Evaluator:
    rules: list[Rule]
    default_interval_s: float = 10.0
    forget_after_s: float = 7 * 86_400.0
    """A host down this long is forgotten (its host-down alert resolves): a machine taken out
    of service does not page forever, across restarts too (the alert's firing time is kept)."""
    clock: Callable[[], float] = time.monotonic
    """What silences are timed on: monotonic, so a step of the wall clock (NTP, a resumed VM)
    is no silence; the service's stands still while its consumer cannot take messages."""
    alerts: dict[str, Alert] = field(default_factory=dict)
    seen: dict[str, _Seen] = field(default_factory=dict)
    hosts_forgotten: set[str] = field(default_factory=set)
    hosts_changed: set[str] = field(default_factory=set)
    """Hosts new to this evaluator or whose name, interval or partition changed: to be saved
    with the state, so a host that falls silent while no evaluator runs is still paged."""
    retired: dict[str, datetime] = field(default_factory=dict)
    """Hosts retired (:meth:`forget` with the retirement's time) in the last hour: a sample
    of one from before its retirement, read after it (a late shard), does not make it known
    again."""
    state_changed: set[str] = field(default_factory=set)
    """Alerts (fingerprints) whose resume point changed without a notification: a pending
    alert begun or dropped, a keep_firing_for window opened or closed. The caller saves them
    with the state and clears the set."""

    def restore(
        self, alerts: list[Alert], hosts: Sequence[KnownHost] = (), now: float | None = None
    ) -> None:
        """State saved by an earlier evaluator (the state topic): no re-page, no lost resolve.
        Hosts known from it count as heard from ``now`` (``clock``'s): one that stays
        silent is paged ``intervals`` of its interval later."""
        self.alerts.update({a.fingerprint: a for a in alerts})
        arrived = self.clock() if now is None else now
        for host in hosts:
            if host.host_id not in self.seen:
                self.seen[host.host_id] = _Seen(
                    host.hostname, host.interval_s, arrived, host.partition, host.sender
                )

    def release(self, partitions: set[int]) -> None:
        """Forget the hosts of partitions another evaluator now owns (a rebalance): it takes
        their alerts from the state topic; this one must not re-send or time them out."""
        self.alerts = {k: a for k, a in self.alerts.items() if a.partition not in partitions}
        self.seen = {h: s for h, s in self.seen.items() if s.partition not in partitions}

    def __post_init__(self) -> None:
        # Compiled once: each threshold rule's reader, comparison and threshold, so a sample
        # costs a read and a compare per rule.
        self._checks = [
            (r, METRICS[r.metric], COMPARISONS[r.op], float(r.threshold))
            for r in self.rules
            if r.kind == "threshold" and r.metric is not None and r.threshold is not None
        ]
        self._absent = [r for r in self.rules if r.kind == "absent"]

    def observe(
        self, event: MetricsEvent, arrived: float | None = None, partition: int | None = None
    ) -> list[Change]:
        """The firing and resolved changes this sample makes; alerts whose resume point
        (pending start, keep_firing_for window) changed without one go to ``state_changed``.
        ``arrived``: when it arrived on ``clock``."""
        host = event.host
        host_id, ts, alerts = host.host_id, event.ts, self.alerts
        if self.retired and host_id in self.retired and ts <= self.retired[host_id]:
            return []
        changes: list[Change] = []
        interval_s = event.interval_s or self.default_interval_s
        now = self.clock() if arrived is None else arrived
        seen = self.seen.get(host_id)
        if (
            seen is None
            or seen.hostname != host.hostname
            or seen.interval_s != interval_s
            or seen.partition != partition
        ):
            self.seen[host_id] = _Seen(host.hostname, interval_s, now, partition, event.sender)
            self.hosts_changed.add(host_id)
        else:
            # A new sender is not saved at once: the replicas of a Prometheus HA pair sending
            # through two receivers alternate, and would write the state topic at every sample.
            seen.arrived, seen.sender = now, event.sender
        for rule in self._absent:
            # Any sample ends a host-down alert (restored from state, or raised here).
            key = f"{rule.name}|{host_id}"
            if key in alerts:
                changes.append(self._resolve(key, ts))
        for rule, read, compare, threshold in self._checks:
            key = f"{rule.name}|{host_id}"
            alert = alerts.get(key)
            value = read(event)
            if value is not None and compare(value, threshold):
                if alert is None:
                    alert = alerts[key] = Alert(
                        rule.name, host_id, host.hostname, "pending", ts, ts
                    )
                    self.state_changed.add(key)
                alert.partition = partition
                alert.last_true, alert.value, alert.hostname = ts, value, host.hostname
                if alert.keep_firing_since is not None:
                    alert.keep_firing_since = None
                    self.state_changed.add(key)
                if alert.state == "pending" and ts - alert.active_since >= rule.for_:
                    alert.state, alert.fired_at = "firing", ts
                    changes.append(Change("firing", alert))
            elif alert is not None:
                if alert.state == "pending":
                    del alerts[key]
                    self.state_changed.add(key)
                    continue
                if alert.keep_firing_since is None:
                    alert.keep_firing_since = ts
                    self.state_changed.add(key)
                if ts - alert.keep_firing_since >= rule.keep_firing_for:
                    changes.append(self._resolve(key, ts))
        return changes

    def check_absent(self, now: float | None = None, wall: float | None = None) -> list[Change]:
        """Host-down rules for every host this evaluator has seen: silences on ``now``
        (``clock``'s, as ``observe``'s ``arrived``), so a step of the wall clock (NTP, a
        resumed VM) pages no host and delays no page; alerts stamped and forgotten on ``wall``
        (``time.time()``)."""
        now = self.clock() if now is None else now
        wall = time.time() if wall is None else wall
        changes = []
        for rule in self._absent:
            for host_id, seen in list(self.seen.items()):
                key = f"{rule.name}|{host_id}"
                silent_s = now - seen.arrived
                down = self.alerts.get(key)
                fired = down.fired_at if down is not None else None
                if fired is not None and wall - fired.timestamp() >= self.forget_after_s:
                    changes.append(self._resolve(key, datetime.fromtimestamp(wall, UTC)))
                    del self.seen[host_id]
                    self.hosts_forgotten.add(host_id)
                elif down is None and silent_s > max(
                    rule.intervals * seen.interval_s, HOST_DOWN_MIN_SILENCE_S
                ):
                    at = datetime.fromtimestamp(wall, UTC)
                    alert = Alert(rule.name, host_id, seen.hostname, "firing", at, at, silent_s)
                    alert.fired_at, alert.partition = at, seen.partition
                    alert.sender = seen.sender
                    self.alerts[key] = alert
                    changes.append(Change("firing", alert))
        return changes

    def forget(
        self, host_id: str, wall: float | None = None, retired_at: datetime | None = None
    ) -> list[Change] | None:
        """The host was retired: its alerts resolve (at ``wall``) and it is no longer
        expected; a later sample makes it known again (with ``retired_at``, the retirement's
        own time: a sample after it). None when this evaluator does not hold it (another
        evaluator's partition, or already forgotten)."""
        if retired_at is not None:
            now = time.time() if wall is None else wall
            self.retired = {
                h: at for h, at in self.retired.items() if now - at.timestamp() < RETIRED_KEPT_S
            }
            self.retired[host_id] = retired_at
        keys = [k for k, a in self.alerts.items() if a.host_id == host_id]
        if host_id not in self.seen and not keys:
            return None
        self.seen.pop(host_id, None)
        at = datetime.fromtimestamp(time.time() if wall is None else wall, UTC)
        return [self._resolve(key, at) for key in keys]

    def let_go(self, host_id: str) -> list[str] | None:
        """Drop a host and its alerts without resolving them: another pipeline's evaluator
        holds it and sends its pages (it was restored here from a record that named no topic).
        The keys of the alerts dropped; None when this evaluator did not hold it."""
        keys = [k for k, a in self.alerts.items() if a.host_id == host_id]
        if host_id not in self.seen and not keys:
            return None
        self.seen.pop(host_id, None)
        for key in keys:
            del self.alerts[key]
        return keys

    def known_host(self, host_id: str) -> KnownHost:
        seen = self.seen[host_id]
        return KnownHost(host_id, seen.hostname, seen.interval_s, seen.partition, seen.sender)

    def firing(self) -> list[Alert]:
        return [a for a in self.alerts.values() if a.state == "firing"]

    def _resolve(self, key: str, at: datetime) -> Change:
        alert = self.alerts.pop(key)
        alert.resolved_at = at
        return Change("resolved", alert)
