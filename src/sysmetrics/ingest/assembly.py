"""Gather each host's series of one sample time into one event, durably.

A sender's request is answered only after its facts are in the **journal** (appended and
fsynced): from then on the receiver owns them, whatever happens to its process. The assembler
keeps the samples still being gathered in memory and rebuilds them from the journal on start.
Requests that arrive while an fsync runs share the next one (group commit, :meth:`durable`),
run in a thread: Prometheus' shards and an exporter's workers post in parallel, and an fsync
per request stopped the event loop for its duration (on this machine's disk ~0.3 ms a request;
on a network or spinning disk several).

A sample is emitted when it has as many facts as the host's previous one or ``wait_s`` after
its first fact arrived, whichever comes first: Prometheus spreads one scrape over parallel
shards and an exporter may split one collection over requests, so a sample's series arrive in
several requests, in any order. Emitting means: the event goes into the
producer's spool (fsynced), then an ``emitted`` record goes into the journal.

A fact for a sample already emitted (a late shard, or a resend of a request whose answer was
lost) is not emitted again: it is counted as late. This is what makes a resend harmless; its
cost is that a series arriving after ``wait_s`` is not in its event (the event has that field
null). A sample older than the host's last one but never emitted is taken as any: the OTel
Collector's exporter sends in parallel and retries each request on its own, so after an outage
an older collection may arrive after a newer one (before 2026-12-04 it was counted late and
lost). For this the receiver remembers each host's last ``REMEMBERED_SAMPLES`` emitted sample
times, across restarts; a sample older than all of them is late. A non-finite value
(Prometheus' stale marker, a NaN sent on every series of a target that went away) is no
reading: it is dropped on receipt, and a sample of none makes no event. A sample emitted
after ``wait_s`` with fewer facts than the previous one sets what the next is expected to
have: a host whose series set shrank waits the bound once; a shard more than ``wait_s`` behind
may leave the next sample's series of it late too.

Journal records (JSON lines): ``{"c": [host, ts_ms, source, false, fact keys, values],
"v": sender}`` for facts received (``"v"`` since 2026-12-04, absent when the sender is not
known; the fourth field, once whether the request carried the whole sample, is read past;
before 2026-12-03 ``"c"`` was ``[host, ts_ms, source, false, [[name, labels, value]…]]``,
still read), ``{"e": [host, ts_ms, source], "s": host state}`` for an event
emitted. It is rewritten (pending samples + each host's state) when it grows past
``compact_bytes``.

A host sent by two senders that name themselves is taken from one at a time (the replicas of a
Prometheus HA pair, :meth:`Assembler._another_replica`); the other's facts are dropped on
receipt and counted, never journaled. Journal: ``{"l": [host, source, sender, ts_ms]}`` when
the sender a host is taken from changes (since 2026-12-04), so a restart keeps it.

A host whose last Prometheus target is dropped from Prometheus' configuration (its ``up``
gets the stale marker, :meth:`Assembler._target`) is **retired**: unless a new target or a
later sample of it comes first (an address change: :meth:`Assembler._withdraw_retirement`),
as late as HostDown allows (:meth:`Assembler._retire_at`), after its earlier samples (emitted
with it, complete or not), a retirement is emitted (``stream.producer.retirement``: the alert
evaluator forgets the host instead of paging it down) and the assembler forgets the host's
state; a fact of the host from before its retirement is late from then on (for a day).
Journal: ``{"r": [host, ts_ms, "target"]}`` when it is received, ``{"x": [host, ts_ms,
"target"]}`` when it is emitted (since 2026-12-04); ``{"t": [host, ts_ms, [job, instance]]}``
for a target new to a host and ``{"d": …}`` for one dropped (also since 2026-12-04), so a
receiver restarted before the marker, or down while Prometheus wrote it (Prometheus sends it
again), still retires the host; a ``"t"`` or ``"c"`` later than an ``"r"`` of its host withdraws
it on replay, as it did when received. A compacted journal's ``"e"`` record of a host carries
``"m"``: the sample times it remembers as emitted (since 2026-12-04; without it, a sample older
than the host's last one is late).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import time
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from math import inf, isfinite
from pathlib import Path
from struct import Struct
from typing import Any, get_args

import msgspec

from sysmetrics.ingest.mapping import (
    STALE_MARKER,
    TARGET,
    Facts,
    HostState,
    Source,
    build_event,
)
from sysmetrics.ingest.wire import SampleKey
from sysmetrics.schema import MetricsEvent
from sysmetrics.stream.spool import write_all

log = logging.getLogger(__name__)

OTEL_SAMPLE_SPREAD_MS = 1000
"""OTLP points of one host this close in time belong to one sample."""
TAKEOVER_INTERVALS = 1.25
"""How far past its leader's last sample another sender's sample of a host must be to take
the host over: a missed scrape's gap, not a replica's offset within one interval; the
failover leaves a gap of at most ~2.25 intervals, under HostDown's 3."""
TAKEOVER_UNKNOWN_INTERVAL_S = 15.0
"""The interval assumed while a host's is not known yet (its first samples)."""
REMEMBERED_SAMPLES = 128
"""Emitted sample times remembered per host, to tell a resend from an older sample never
received: ~21 minutes at a 10-s interval, 2 at 1 s (the Collector retries for 5 by default)."""
RETIRED_KEPT_MS = 86_400_000
"""How long a retired host's retirement time is kept, to count its stragglers late."""
SILENT_FORGOTTEN_MS = 86_400_000
"""A host with no sample and no Prometheus target heard for this long (by the clock and by the
newest sample of any host) is forgotten at the next compaction. Fleets whose hosts come and go
under new names (autoscaled nodes, containers running the Collector, each with a host id of
its own) filled the receiver's memory (~2.3 KiB per 8-core host) and journal for ever; nothing
resends a sample this old (Prometheus' WAL keeps hours, the Collector retries for minutes). A
host back after that starts anew: its first sample has no CPU percentage, as a new host's."""
HOST_DOWN_INTERVALS = 3
"""The default HostDown rule's silence, in intervals: a retirement waits for a new target of its
host no longer than this allows (:meth:`Assembler._retire_at`)."""
RETIREMENT_AHEAD_S = 5.0
"""How long before HostDown would page a silent host its retirement is emitted at the latest
(the pipeline's own delay between two records of one host, as HostDown's 5-s floor)."""

_SOURCES: tuple[str, ...] = get_args(Source)
_DOUBLE = Struct("<d")

_encode_lines = msgspec.json.Encoder().encode_lines
_decode = msgspec.json.Decoder().decode


def _received(key: SampleKey, facts: Facts, sender: str | None) -> dict[str, Any]:
    """The journal record of facts received (the module's docstring gives its format)."""
    record: dict[str, Any] = {"c": [*key, False, list(facts), list(facts.values())]}
    if sender is not None:
        record["v"] = sender
    return record


@dataclass
class _Pending:
    first_seen: float
    facts: Facts = field(default_factory=dict)
    sender: str | None = None
    """Who delivered its facts (the last request's, should several senders send one sample)."""


@dataclass
class AssemblyStats:
    received_facts: int = 0
    late_facts: int = 0
    replica_facts: int = 0
    retired: int = 0
    retirements_withdrawn: int = 0
    emitted: int = 0
    emitted_incomplete: int = 0
    journal_syncs: int = 0


class Assembler:
    def __init__(self, directory: Path, wait_s: float, compact_bytes: int = 64 << 20) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "journal.jsonl"
        self.wait_s = wait_s
        self.compact_bytes = compact_bytes
        self.stats = AssemblyStats()
        self.pending: dict[SampleKey, _Pending] = {}
        self.hosts: dict[tuple[str, str], HostState] = {}
        self.emitted_at: dict[tuple[str, str], array[int]] = {}
        """(host, source) -> its last ``REMEMBERED_SAMPLES`` emitted sample times, sorted."""
        self._by_host: dict[tuple[str, str], set[SampleKey]] = {}
        self.leaders: dict[tuple[str, str], tuple[str, int]] = {}
        """(host, source) -> the named sender it is taken from and its latest sample time
        (journaled when the sender changes; after a restart the time is the host's latest
        sample's, so a restart hands no host to the other replica)."""
        self.targets: dict[str, dict[tuple[str, ...], int]] = {}
        """host -> its Prometheus targets (``up``'s job and instance) -> when the receiver
        first heard their ``up`` (journaled: a target new to the host, one dropped), or a later
        one (in memory)."""
        self._retiring: dict[str, set[SampleKey]] = {}
        """host -> its retirements received, not emitted yet: (host, ts_ms, TARGET)."""
        self.retired: dict[str, int] = {}
        """host -> when it was retired (Unix ms), for a day."""
        self._emitted_last: dict[str, float] = {}
        """host -> when its latest sample was emitted (monotonic; not journaled: after a
        restart a retirement is due at once)."""
        self._load()
        self._out = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = os.fstat(self._out).st_size
        self.appended = 0
        """How many appends the journal has had; ``synced``: how many of them are fsynced."""
        self.synced = 0
        self._sync: asyncio.Future[None] | None = None
        self._torn = False
        self._owed: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ journal
    def _load(self) -> None:
        if not self.path.exists():
            return
        now = time.monotonic()
        lines = self.path.read_bytes().split(b"\n")
        for number, line in enumerate(lines):
            if not line:
                continue
            try:
                record = _decode(line)
            except msgspec.DecodeError:
                # Only the last line can be torn by a crash; it was never acknowledged.
                if number < len(lines) - 2:
                    log.error("ingest journal %s: line %d unreadable, skipped", self.path, number)
                continue
            if "c" in record:
                host, ts_ms, source, _whole, *kept = record["c"]
                pairs: Iterable[tuple[Any, Any]]
                if len(kept) == 2:
                    pairs = zip(*kept, strict=True)
                else:  # the format before 2026-12-03: [[name, labels, value], ...]
                    pairs = ((fact[:2], fact[2]) for fact in kept[0])
                # null: a non-finite value journaled before receive() dropped them (JSON has no NaN)
                facts = {(n, tuple(labels)): v for (n, labels), v in pairs if v is not None}
                if not facts:
                    continue
                self._merge((host, ts_ms, source), facts, now, record.get("v"))
            elif "e" in record:
                host, ts_ms, source = record["e"]
                self._forget((host, ts_ms, source))
                self.hosts[(host, source)] = HostState.from_json(record["s"])
                for emitted_ts in record.get("m", [ts_ms]):
                    self._remember((host, emitted_ts, source))
            elif "r" in record:
                self._retire(tuple(record["r"]))
            elif "t" in record:
                host, ts_ms, labels = record["t"]
                targets = self.targets.setdefault(host, {})
                targets[tuple(labels)] = max(ts_ms, targets.get(tuple(labels), ts_ms))
                self._withdraw_retirement(host, ts_ms)
            elif "d" in record:
                host, ts_ms, labels = record["d"]
                targets = self.targets.get(host, {})
                if targets.get(tuple(labels), ts_ms) < ts_ms:
                    del targets[tuple(labels)]
            elif "l" in record:
                host, source, sender, ts_ms = record["l"]
                self.leaders[(host, source)] = (sender, ts_ms)
            elif "x" in record:
                self._retired(tuple(record["x"]))
            else:
                log.warning(
                    "ingest journal %s: line %d is of a newer version, skipped", self.path, number
                )
        for (host, source), (sender, ts_ms) in self.leaders.items():
            self.leaders[(host, source)] = (sender, max(ts_ms, self._latest_of(host, source)))
        if self.pending:
            log.info("ingest journal holds %d samples still being assembled", len(self.pending))
        self.stats = AssemblyStats()

    def _append(self, records: list[dict[str, Any]]) -> None:
        """Append whole lines or raise OSError: a full disk may take part of a write, which is
        cut off again, so that the next append does not continue a torn line."""
        if self._owed:
            records = self._owed + records
        if not records:
            return
        data = _encode_lines(records)
        if self._torn:
            data = b"\n" + data
        try:
            write_all(self._out, data)
        except OSError:
            try:
                os.ftruncate(self._out, self._size)
            except OSError:
                self._torn = True  # the next append ends the torn line first
            raise
        self._torn = False
        self._owed = []
        self._size += len(data)
        self.appended += 1

    def sync(self) -> None:
        """fsync every append so far."""
        if self.synced < self.appended:
            appended = self.appended
            os.fsync(self._out)
            self._synced_to(appended)

    async def durable(self, append: int) -> None:
        """Return once the journal is fsynced up to ``append`` (what :meth:`receive` returned).

        One fsync runs at a time, in a thread, while the event loop goes on; the requests
        appended meanwhile wait for the next one together. Raises OSError when it fails."""
        while self.synced < append:
            if self._sync is None:
                self._sync = asyncio.ensure_future(self._sync_in_thread())
            await asyncio.shield(self._sync)

    async def _sync_in_thread(self) -> None:
        # A duplicate descriptor: compact() may replace the journal meanwhile, and it leaves
        # every append before it fsynced in the new file.
        appended, handle = self.appended, os.dup(self._out)
        try:
            await asyncio.to_thread(os.fsync, handle)
        finally:
            os.close(handle)
            self._sync = None
        self._synced_to(appended)

    def _synced_to(self, appended: int) -> None:
        self.stats.journal_syncs += 1
        self.synced = max(self.synced, appended)

    def compact(self) -> None:
        """Rewrite the journal as what it holds now: retired hosts (first: replayed, each
        forgets its host's state), host states, pending samples, targets and retirements;
        hosts silent for ``SILENT_FORGOTTEN_MS`` are forgotten first."""
        now_ms = time.time() * 1000
        self.retired = {h: ts for h, ts in self.retired.items() if ts >= now_ms - RETIRED_KEPT_MS}
        # Silent by the newest sample as well as by the clock: samples replayed from long ago
        # (a fleet's history) are not silent among themselves.
        newest = max((s.last_ts or 0 for s in self.hosts.values()), default=now_ms)
        for host in self._silent_since(min(now_ms, newest) - SILENT_FORGOTTEN_MS):
            self._drop(host)
        records: list[dict[str, Any]] = [
            {"x": [host, ts_ms, TARGET]} for host, ts_ms in self.retired.items()
        ]
        for (host, source), state in self.hosts.items():
            if state.last_ts is not None:
                record = {"e": [host, state.last_ts, source], "s": state.to_json()}
                if (host, source) in self.emitted_at:
                    record["m"] = list(self.emitted_at[(host, source)])
                records.append(record)
        for (host, ts_ms, source), pending in self.pending.items():
            records.append(_received((host, ts_ms, source), pending.facts, pending.sender))
        records.extend(
            {"t": [host, ts_ms, list(labels)]}
            for host, targets in self.targets.items()
            for labels, ts_ms in targets.items()
        )
        records.extend(
            {"l": [host, source, sender, ts_ms]}
            for (host, source), (sender, ts_ms) in self.leaders.items()
        )
        records.extend({"r": list(key)} for key in self.retiring)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(_encode_lines(records))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        with contextlib.suppress(OSError):
            directory = os.open(self.path.parent, os.O_RDONLY)
            os.fsync(directory)
            os.close(directory)
        os.close(self._out)
        self._out = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = os.fstat(self._out).st_size
        self.synced = self.appended
        self._owed = []  # the rewritten journal holds what they said

    # ------------------------------------------------------------------ receive
    def _merge(
        self,
        key: SampleKey,
        facts: Facts,
        now: float,
        sender: str | None,
        named: bool = False,
    ) -> tuple[int, int]:
        """Add facts to a pending sample; (facts taken, facts late or another replica's)."""
        host, ts_ms, source = key
        slack = OTEL_SAMPLE_SPREAD_MS if source == "otel" else 0
        near = self._by_host.get((host, source)) if slack else None
        if near:
            # One collection's scrapers stamp their points milliseconds apart and an exporter
            # may split them over requests: points of one host within the spread are one sample.
            key = next((k for k in near if abs(k[1] - ts_ms) <= slack), key)
        pending = self.pending.get(key)
        if pending is None:
            if self._emitted_already(key, slack):
                return 0, len(facts)
            if host in self.retired and ts_ms <= self.retired[host]:
                return 0, len(facts)
            if named and sender is not None and self._another_replica(host, source, ts_ms, sender):
                self.stats.replica_facts += len(facts)
                return 0, 0
            self.pending[key] = _Pending(now, dict(facts), sender)
            self._by_host.setdefault((host, source), set()).add(key)
            self._withdraw_retirement(host, ts_ms)
            return len(facts), 0
        pending.facts.update(facts)
        if sender is not None:
            pending.sender = sender
        return len(facts), 0

    def _another_replica(self, host: str, source: str, ts_ms: int, sender: str) -> bool:
        """Whether a new sample of a host comes from a sender other than the one it is taken
        from (its *leader*): both replicas of a Prometheus HA pair scrape every host, at other
        moments, and would make two events per interval, seconds apart (the host's interval
        learnt as that offset: a replica that stopped paged its hosts down). The leader keeps
        the host while it sends; another named sender takes over with a sample more than
        ``TAKEOVER_INTERVALS`` of the host's interval after the leader's last."""
        leader = self.leaders.get((host, source))
        if leader is not None and leader[0] != sender:
            state = self.hosts.get((host, source))
            interval_s = state.interval_s if state is not None and state.interval_s else None
            wait_ms = TAKEOVER_INTERVALS * (interval_s or TAKEOVER_UNKNOWN_INTERVAL_S) * 1000
            if ts_ms <= leader[1] + wait_ms:
                return True
            log.info(
                "ingest: %s now sends host %s (%s sent nothing for it)", sender, host, leader[0]
            )
        if leader is None or leader[0] != sender:  # journaled with the request's facts
            self._owed.append({"l": [host, source, sender, ts_ms]})
        if leader is None or leader[0] != sender or ts_ms > leader[1]:
            self.leaders[(host, source)] = (sender, ts_ms)
        return False

    def _emitted_already(self, key: SampleKey, slack: int) -> bool:
        """Whether the sample at ``key``'s time (give or take ``slack``) was emitted, or is
        older than every emitted time remembered: too old to tell, so taken as emitted."""
        host, ts_ms, source = key
        state = self.hosts.get((host, source))
        if state is None or state.last_ts is None or ts_ms > state.last_ts + slack:
            return False
        times = self.emitted_at.get((host, source))
        if not times or ts_ms < times[0] - slack:
            return True
        nearest = bisect.bisect_left(times, ts_ms - slack)
        return nearest < len(times) and times[nearest] <= ts_ms + slack

    def _remember(self, key: SampleKey) -> None:
        """Note a sample as emitted (the host's last ``REMEMBERED_SAMPLES`` are kept)."""
        host, ts_ms, source = key
        times = self.emitted_at.setdefault((host, source), array("q"))
        at = bisect.bisect_left(times, ts_ms)
        if at < len(times) and times[at] == ts_ms:
            return
        times.insert(at, ts_ms)
        if len(times) > REMEMBERED_SAMPLES:
            del times[: len(times) - REMEMBERED_SAMPLES]

    def _forget(self, key: SampleKey) -> None:
        self.pending.pop(key, None)
        self._by_host.get((key[0], key[2]), set()).discard(key)

    def _target(self, key: SampleKey, facts: Facts, sender: str | None) -> list[dict[str, Any]]:
        """Take a host's ``up`` facts: a target it is scraped by, or one dropped (the stale
        marker: Prometheus writes it when service discovery or a reload removes the target,
        never when a scrape fails, which is ``up`` 0). The host is retired when the last of its
        targets is dropped after its latest sample. Returns the journal records to write: a
        target new to the host, one dropped, the retirement; so a receiver restarted (or down
        while Prometheus wrote the marker, which it sends again) still knows the targets.
        Another replica's ``up`` is not this host's (it may keep a target the leader dropped),
        and a target that is no host of ours (no mapped series) is not followed."""
        host, ts_ms, _ = key
        if not self._known(host) or self._led_by_another(host, sender):
            return []
        targets = self.targets.setdefault(host, {})
        records: list[dict[str, Any]] = []
        for (_, labels), value in facts.items():
            if _DOUBLE.pack(value) == STALE_MARKER:
                if targets.get(labels, ts_ms) < ts_ms:  # not a replayed one from before its up
                    del targets[labels]
                    records.append({"d": [host, ts_ms, list(labels)]})
            elif labels not in targets:
                targets[labels] = ts_ms
                records.append({"t": [host, ts_ms, list(labels)]})
                self._withdraw_retirement(host, ts_ms)
            else:
                targets[labels] = max(ts_ms, targets[labels])
        dropped = any("d" in record for record in records)
        if (
            not dropped
            or targets
            or key in self._retiring.get(host, ())
            or self._latest(host) >= ts_ms
        ):
            return records
        self._retire(key)
        return [*records, {"r": list(key)}]

    @property
    def retiring(self) -> set[SampleKey]:
        """Retirements received, not emitted yet."""
        return {key for keys in self._retiring.values() for key in keys}

    def _retire(self, key: SampleKey) -> None:
        self._retiring.setdefault(key[0], set()).add(key)

    def _unretire(self, key: SampleKey) -> None:
        keys = self._retiring.get(key[0], set())
        keys.discard(key)
        if not keys:
            self._retiring.pop(key[0], None)

    def _withdraw_retirement(self, host: str, ts_ms: int) -> None:
        """A sample or a new target of a retiring host, later than its last target's stale
        marker: the host is scraped again (its target's address changed: Prometheus wrote the
        old one's marker before its discovery started scraping the new one, 3.4 s later in a
        test with Debian's Prometheus), so it is not retired."""
        withdrawn = [key for key in self._retiring.get(host, ()) if key[1] < ts_ms]
        for key in withdrawn:
            self._unretire(key)
            self.stats.retirements_withdrawn += 1
            log.info("ingest: host %s is scraped again: not retired", host)

    def _retire_at(self, host: str) -> float:
        """When (monotonic) a retirement of ``host`` is due: as late as a new target may still
        come without HostDown paging the host first (``HOST_DOWN_INTERVALS`` of its interval
        after its latest sample was emitted, less ``RETIREMENT_AHEAD_S``); at once when either
        is not known (a restart, a host never emitted)."""
        emitted = self._emitted_last.get(host)
        intervals = [
            state.interval_s
            for state in (self.hosts.get((host, source)) for source in _SOURCES)
            if state is not None and state.interval_s
        ]
        if emitted is None or not intervals:
            return -inf
        return emitted + HOST_DOWN_INTERVALS * min(intervals) - RETIREMENT_AHEAD_S

    def _known(self, host: str) -> bool:
        return any((host, s) in self.hosts or self._by_host.get((host, s)) for s in _SOURCES)

    def _led_by_another(self, host: str, sender: str | None) -> bool:
        return any(
            leader is not None and leader[0] != sender
            for leader in (self.leaders.get((host, s)) for s in _SOURCES)
        )

    def _latest(self, host: str) -> int:
        """The time of the host's latest sample, emitted or pending (-1: none)."""
        return max(self._latest_of(host, source) for source in _SOURCES)

    def _latest_of(self, host: str, source: str) -> int:
        """The time of the host's latest sample from ``source``, emitted or pending (-1: none)."""
        state = self.hosts.get((host, source))
        latest = state.last_ts if state is not None and state.last_ts is not None else -1
        return max([latest, *(k[1] for k in self._by_host.get((host, source), ()))])

    def _retired(self, key: SampleKey) -> None:
        """The host's retirement is emitted: everything kept of it goes."""
        host = key[0]
        self._unretire(key)
        self.retired[host] = max(key[1], self.retired.get(host, key[1]))
        self._drop(host)

    def _silent_since(self, cutoff_ms: float) -> list[str]:
        """Hosts with no sample (emitted or pending) and no target heard since ``cutoff_ms``,
        and no retirement under way."""
        known = {host for host, _source in (*self.hosts, *self.leaders, *self.emitted_at)}
        return [
            host
            for host in known | set(self.targets)
            if host not in self._retiring
            and self._latest(host) < cutoff_ms
            and max(self.targets.get(host, {}).values(), default=-1) < cutoff_ms
        ]

    def _drop(self, host: str) -> None:
        """Forget everything kept of ``host`` but its pending samples."""
        self.targets.pop(host, None)
        self._emitted_last.pop(host, None)
        for source in _SOURCES:
            self.hosts.pop((host, source), None)
            self.emitted_at.pop((host, source), None)
            self.leaders.pop((host, source), None)
            if not self._by_host.get((host, source)):
                self._by_host.pop((host, source), None)

    def receive(
        self,
        samples: dict[SampleKey, Facts],
        sender: str | None = None,
        named: bool = False,
    ) -> int:
        """Take a request's facts (delivered by ``sender``; ``named``: a name it gave itself,
        so that two such senders of one host are replicas, one taken at a time) into the
        journal; the caller may acknowledge the request once they are durable: after
        :meth:`sync`, or ``await durable(n)`` with the number this returns. Raises OSError when
        the journal cannot be written."""
        now = time.monotonic()
        records = []
        for key, facts in samples.items():
            if key[2] == TARGET:
                records.extend(self._target(key, facts, sender))
                continue
            # One sum finds a NaN or infinity among them (a finite sum may overflow: then
            # the filter below keeps all).
            if not isfinite(sum(facts.values())):
                facts = {fact: value for fact, value in facts.items() if isfinite(value)}
            if not facts:
                continue
            taken, late = self._merge(key, facts, now, sender, named)
            self.stats.received_facts += taken
            self.stats.late_facts += late
            if taken:
                records.append(_received(key, facts, sender))
        if not records:  # nothing new (late, or no reading): nothing to wait for
            return self.synced
        self._append(records)
        return self.appended

    # ------------------------------------------------------------------ emit
    def due(self, now: float | None = None) -> list[SampleKey]:
        """Samples and retirements (source ``TARGET``) to emit now, oldest first per host. A
        retirement is due when no new target of its host came in time (:meth:`_retire_at`),
        with every earlier sample of its host; the host's later samples wait for the next
        call."""
        now = time.monotonic() if now is None else now
        ready = set()
        for key, pending in self.pending.items():
            state = self.hosts.get((key[0], key[2]))
            expected = state.last_facts if state is not None else 0
            if (expected and len(pending.facts) >= expected) or (
                now - pending.first_seen >= self.wait_s
            ):
                ready.add(key)
        for key in self.retiring:
            host, ts_ms, _ = key
            if now < self._retire_at(host):
                continue
            ready.add(key)
            for source in _SOURCES:
                for sample in self._by_host.get((host, source), ()):
                    if sample[1] < ts_ms:
                        ready.add(sample)
                    else:
                        ready.discard(sample)
        return sorted(ready, key=lambda k: (k[0], k[1], k[2] == TARGET))

    def build(self, key: SampleKey) -> MetricsEvent:
        host, ts_ms, source = key
        pending = self.pending[key]
        state = self.hosts.setdefault((host, source), HostState())
        expected = state.last_facts
        facts = pending.facts
        source_name: Source = source  # type: ignore[assignment]
        event = build_event(source_name, host, ts_ms, facts, state, pending.sender)
        if len(facts) < expected:
            self.stats.emitted_incomplete += 1
        # The next sample is expected with this one's series: a host that sends fewer now (a
        # NIC or mount gone) waits the bound once, not on every sample from then on.
        state.last_facts = len(facts)
        return event

    def emitted(self, keys: list[SampleKey]) -> None:
        """Record that these samples' events are in the producer's spool. Their records are
        owed to the journal until an append succeeds (a full disk): a sample journaled as
        received but not as emitted would be emitted again after a restart."""
        for key in keys:
            if key[2] == TARGET:
                self._retired(key)
                self._owed.append({"x": list(key)})
                self.stats.retired += 1
                continue
            self._forget(key)
            self._remember(key)
            self._emitted_last[key[0]] = time.monotonic()
            state = self.hosts[(key[0], key[2])]
            self._owed.append({"e": list(key), "s": state.to_json()})
            self.stats.emitted += 1
        self._append([])
        self.sync()
        if self._size > self.compact_bytes:
            self.compact()

    def close(self) -> None:
        os.close(self._out)
