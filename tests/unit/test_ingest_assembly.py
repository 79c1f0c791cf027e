"""The ingest assembler's journal on real files: what was received survives a restart, what was
emitted is not emitted again, a torn last line is skipped, a compacted journal says the same;
stale markers are no readings."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import subprocess
import sys
import time
from pathlib import Path

import cramjam
import pytest

from sysmetrics.ingest.assembly import Assembler
from sysmetrics.ingest.wire import decode_remote_write
from tests.support.remote_write import STALE_MARKER, series_of, write_request

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ingest"

T0 = 1_764_547_200_000
KEY = ("host-1:9100", T0, "node_exporter")
PART_1 = {("node_load1", ()): 0.5, ("node_memory_MemTotal_bytes", ()): 8e9}
PART_2 = {
    ("node_memory_MemAvailable_bytes", ()): 6e9,
    ("node_cpu_seconds_total", ("0", "idle")): 100.0,
}


def _restart(assembler: Assembler, directory: Path) -> Assembler:
    assembler.close()
    return Assembler(directory, wait_s=15)


def test_a_sample_received_in_two_requests_survives_a_restart(tmp_path: Path) -> None:
    assembler = Assembler(tmp_path, wait_s=15)
    assembler.receive({KEY: PART_1})
    assembler.receive({KEY: PART_2})
    assert assembler.due(now=0) == []  # neither complete nor waited out
    assembler = _restart(assembler, tmp_path)
    assert set(assembler.pending) == {KEY}
    assert assembler.due(now=math.inf) == [KEY]
    event = assembler.build(KEY)
    assert event.memory is not None and event.memory.total_bytes == 8_000_000_000
    assert event.memory.available_bytes == 6_000_000_000
    assert event.cpu.load_1m == 0.5


def test_an_emitted_sample_is_not_emitted_again_after_a_restart(tmp_path: Path) -> None:
    assembler = Assembler(tmp_path, wait_s=15)
    assembler.receive({KEY: PART_1 | PART_2})
    assembler.build(KEY)
    assembler.emitted([KEY])
    assembler = _restart(assembler, tmp_path)
    assert assembler.pending == {}
    assembler.receive({KEY: PART_1})  # a resend after a lost answer
    assert assembler.pending == {} and assembler.stats.late_facts == len(PART_1)
    later = (KEY[0], T0 + 10_000, KEY[2])
    assembler.receive({later: PART_1 | PART_2})
    assert assembler.due(now=0) == [later], "as many facts as the host's last sample: complete"


def test_an_older_sample_never_emitted_is_taken_after_a_later_one_across_restarts(
    tmp_path: Path,
) -> None:
    """The OTel Collector retries each export on its own: after an outage an older collection
    may arrive once a later one is emitted. It was never emitted, so it is taken (before
    2026-12-04 it was counted late and lost); a resend of one emitted is late, also after a
    restart and a compaction; one older than every remembered emitted time is late."""
    from sysmetrics.ingest.assembly import REMEMBERED_SAMPLES

    host, source = "otel-host", "otel"
    facts = {("system.memory.usage", ("used",)): 5.0, ("system.memory.usage", ("free",)): 1.0}

    def emit(assembler: Assembler, ts_ms: int) -> None:
        assembler.receive({(host, ts_ms, source): facts})
        assert assembler.due(now=math.inf) == [(host, ts_ms, source)]
        assembler.build((host, ts_ms, source))
        assembler.emitted([(host, ts_ms, source)])

    def late_after(assembler: Assembler, ts_ms: int) -> int:
        before = assembler.stats.late_facts
        assembler.receive({(host, ts_ms, source): facts})
        return assembler.stats.late_facts - before

    assembler = Assembler(tmp_path, wait_s=15)
    for ts_ms in (T0, T0 + 2_000, T0 + 8_000):  # T0 + 4_000 and + 6_000 held back (retried)
        emit(assembler, ts_ms)
    assembler = _restart(assembler, tmp_path)
    emit(assembler, T0 + 4_000)
    assert late_after(assembler, T0 + 2_000 + 3) == len(facts), "a resend (its points' spread)"
    assembler.compact()
    assembler = _restart(assembler, tmp_path)
    assert late_after(assembler, T0 + 4_000) == len(facts)
    emit(assembler, T0 + 6_000)
    start = T0 + 20_000
    for n in range(REMEMBERED_SAMPLES):
        emit(assembler, start + 5_000 * n)
    assert late_after(assembler, start - 2_500) == len(facts), "older than all remembered"
    assert late_after(assembler, start + 2_500) == 0, "between two remembered: never emitted"
    assert assembler.due(now=math.inf) == [(host, start + 2_500, source)]


def test_a_samples_sender_is_in_its_event_after_a_restart_and_a_compaction(tmp_path: Path) -> None:
    """The sender of a request (``X-Sysmetrics-Sender``, else its address) is journaled with
    its facts: the event built after a restart names it; a sample whose sender is not known
    (a journal from before 2026-12-04) has none."""
    assembler = Assembler(tmp_path, wait_s=15)
    later = (KEY[0], T0 + 10_000, KEY[2])
    assembler.receive({KEY: PART_1}, sender="prom-eu-1")
    assembler.receive({KEY: PART_2}, sender="prom-eu-1")
    assembler.receive({later: PART_1 | PART_2})
    assembler = _restart(assembler, tmp_path)
    assembler.compact()
    assembler = _restart(assembler, tmp_path)
    assert assembler.due(now=math.inf) == [KEY, later]
    assert assembler.build(KEY).sender == "prom-eu-1"
    assert assembler.build(later).sender is None


def _sent_over_time(
    assembler: Assembler, sends: list[tuple[int, str]], named: bool = True
) -> list[tuple[int, str | None]]:
    """Each (seconds after T0, sender) as a whole sample of host-1, emitted as soon as it is due;
    the events' (seconds, sender)."""
    events = []
    for at_s, sender in sends:
        key = (KEY[0], T0 + at_s * 1000, KEY[2])
        assembler.receive({key: PART_1 | PART_2}, sender=sender, named=named)
        for due in assembler.due(now=math.inf):
            event = assembler.build(due)
            assembler.emitted([due])
            events.append((due[1] // 1000 - T0 // 1000, event.sender))
    return events


def test_a_host_that_two_replicas_send_is_taken_from_one_and_the_other_takes_over(
    tmp_path: Path,
) -> None:
    """A Prometheus HA pair: both replicas scrape every host, 3 s apart in a 10-s interval.
    One event per interval, from the replica that sent first; when it stops, the other takes
    the host over with its first sample more than 1.25 intervals after the leader's last (a
    gap under HostDown's 3 intervals), and keeps it when the first comes back."""
    assembler = Assembler(tmp_path, wait_s=15)
    both = sorted(
        [(t, "prom-a") for t in range(0, 60, 10)] + [(t, "prom-b") for t in (3, 13, 23, 33, 43, 53)]
    )
    after = [(63, "prom-b"), (73, "prom-b"), (80, "prom-a"), (83, "prom-b"), (90, "prom-a")]
    events = _sent_over_time(assembler, both + after)
    assert events == [(t, "prom-a") for t in range(0, 60, 10)] + [
        (63, "prom-b"),
        (73, "prom-b"),
        (83, "prom-b"),
    ]
    assert assembler.stats.replica_facts == 8 * len(PART_1 | PART_2)
    assert assembler.hosts[(KEY[0], KEY[2])].interval_s == 10, "learnt from one replica"


def test_senders_known_only_by_their_address_are_not_replicas(tmp_path: Path) -> None:
    """Addresses do not name senders: a proxy's several instances deliver one Prometheus'
    requests from several addresses, and none of them may be dropped."""
    assembler = Assembler(tmp_path, wait_s=15)
    sends = [(0, "10.0.0.1"), (10, "10.0.0.2"), (20, "10.0.0.1"), (30, "10.0.0.2")]
    assert _sent_over_time(assembler, sends, named=False) == sends
    assert assembler.stats.replica_facts == 0


def test_a_torn_last_line_is_skipped_and_the_rest_is_kept(tmp_path: Path) -> None:
    assembler = Assembler(tmp_path, wait_s=15)
    assembler.receive({KEY: PART_1})
    assembler.close()
    with (tmp_path / "journal.jsonl").open("ab") as journal:
        journal.write(b'{"c": ["host-1:9100", 17645')  # a crash mid-append, never answered
    assembler = Assembler(tmp_path, wait_s=15)
    assert set(assembler.pending) == {KEY}
    assert len(assembler.pending[KEY].facts) == len(PART_1)


def test_a_journal_record_of_a_newer_version_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A receiver rolled back after a newer one wrote a record kind it does not know starts,
    says so, and keeps every record it knows (before and after that line)."""
    assembler = Assembler(tmp_path, wait_s=15)
    assembler.receive({KEY: PART_1})
    assembler.close()
    with (tmp_path / "journal.jsonl").open("ab") as journal:
        journal.write(b'{"z": ["host-1:9100", 1, "something new"]}\n')
    assembler = Assembler(tmp_path, wait_s=15)
    assembler.receive({KEY: PART_2})
    with caplog.at_level(logging.WARNING, logger="sysmetrics.ingest.assembly"):
        assembler = _restart(assembler, tmp_path)
    assert "line 1 is of a newer version, skipped" in caplog.text
    assert assembler.pending[KEY].facts == PART_1 | PART_2


def test_a_compacted_journal_holds_the_same_samples_and_hosts(tmp_path: Path) -> None:
    assembler = Assembler(tmp_path, wait_s=15)
    assembler.receive({KEY: PART_1 | PART_2})
    assembler.build(KEY)
    assembler.emitted([KEY])
    later = (KEY[0], T0 + 10_000, KEY[2])
    assembler.receive({later: PART_1})
    pending = {k: dict(p.facts) for k, p in assembler.pending.items()}
    state = assembler.hosts[(KEY[0], KEY[2])].to_json()
    assembler.compact()
    assembler = _restart(assembler, tmp_path)
    assert {k: dict(p.facts) for k, p in assembler.pending.items()} == pending
    assert assembler.hosts[(KEY[0], KEY[2])].to_json() == state


def test_a_host_that_sends_fewer_series_waits_the_bound_once_not_for_ever(tmp_path: Path) -> None:
    """A NIC or a mount gone, containers' veths come and go: the sample after the shrink waits
    ``wait_s`` (its series might still be on their way) and counts as incomplete; the next one
    is expected with what the host sends now, as the README says (the host's previous sample)."""
    assembler = Assembler(tmp_path, wait_s=15)
    times = [(KEY[0], T0 + 10_000 * i, KEY[2]) for i in range(4)]
    assembler.receive({times[0]: PART_1 | PART_2})
    assembler.build(times[0])
    assembler.emitted([times[0]])
    for key in times[1:]:
        assembler.receive({key: PART_1})
        if key == times[1]:
            assert assembler.due(now=0) == [], "fewer series than before: wait"
            assert assembler.due(now=math.inf) == [key]
        else:
            assert assembler.due(now=0) == [key], "as many as the previous sample: complete"
        assembler.build(key)
        assembler.emitted([key])
    assert assembler.stats.emitted_incomplete == 1
    grown = (KEY[0], T0 + 40_000, KEY[2])
    assembler.receive({grown: PART_1 | PART_2})
    assert assembler.due(now=0) == [grown]


def test_a_sample_short_of_an_interfaces_series_has_no_counter_totals(tmp_path: Path) -> None:
    """A shard's series still on their way when the wait runs out: summed without the late
    interface (or disk), the host's totals stepped down, and the next sample added the whole
    counter of it to one step (10 GB in 10 s here). Such a sample's totals are unknown, as our
    collector's are when one interface's counter is; the interfaces that came are listed. A
    sample short of other series (a mount gone) keeps them."""
    assembler = Assembler(tmp_path, wait_s=15)

    def counters(nic: str, sent: float) -> dict:  # type: ignore[type-arg]
        return {
            ("node_network_transmit_bytes_total", (nic,)): sent,
            ("node_disk_written_bytes_total", (nic.replace("eth", "sd"),)): sent,
        }

    samples = [
        PART_1 | counters("eth0", 1e4) | counters("eth1", 1e10),
        PART_1 | counters("eth0", 2e4),  # eth1's and sd1's series late
        PART_1 | counters("eth0", 3e4) | counters("eth1", 1e10 + 1e4),
        counters("eth0", 4e4) | counters("eth1", 1e10 + 2e4),  # PART_1's series gone
    ]
    events = []
    for i, facts in enumerate(samples):
        key = (KEY[0], T0 + 10_000 * i, KEY[2])
        assembler.receive({key: facts})
        [due] = assembler.due(now=math.inf)
        events.append(assembler.build(due))
        assembler.emitted([due])
    sent = [e.network.bytes_sent if e.network else "no network" for e in events]
    assert sent == [1e4 + 1e10, None, 3e4 + 1e10 + 1e4, 4e4 + 1e10 + 2e4]
    assert [e.disk_io is None for e in events] == [False, True, False, False]
    assert [i.name for i in events[1].network.interfaces] == ["eth0"]  # type: ignore[union-attr]
    assert assembler.stats.emitted_incomplete == 2


def test_stale_markers_make_no_sample_and_no_event(tmp_path: Path) -> None:
    """A target that goes down gets a stale marker (NaN) on each of its series at the next
    scrape: that time is no reading of the host, so it must not become an empty event; a live
    series among stale ones is a sample of that one reading."""
    live = series_of((FIXTURES / "node_exporter_darwin.prom").read_text())
    stale = [(labels, STALE_MARKER) for labels, _ in live]
    one_live = [
        (labels, v if labels["__name__"] == "node_load1" else STALE_MARKER) for labels, v in live
    ]
    assembler = Assembler(tmp_path, wait_s=15)
    for ts, series in ((T0, stale), (T0 + 10_000, one_live)):
        payload = write_request(series, ts, {"instance": "m:9100", "job": "node"})
        data = bytes(cramjam.snappy.decompress_raw(payload))
        assembler.receive(decode_remote_write(data, "instance", 10**6).samples)
    [key] = assembler.pending
    assert key[1] == T0 + 10_000 and list(assembler.pending[key].facts) == [("node_load1", ())]
    assembler = _restart(assembler, tmp_path)
    assert list(assembler.pending) == [key], "the journal holds readings only"


def test_a_journal_with_a_non_finite_value_replays(tmp_path: Path) -> None:
    """JSON has no NaN: a journal written before stale markers were dropped holds them as null.
    Replayed, they are no readings (they crashed the event building before)."""
    (tmp_path / "journal.jsonl").write_bytes(
        b'{"c":["m:9100",%d,"node_exporter",false,[["node_load1",[],null]]]}\n'
        b'{"c":["m:9100",%d,"node_exporter",false,[["node_load1",[],null],'
        b'["node_memory_MemTotal_bytes",[],8e9]]]}\n' % (T0, T0 + 10_000)
    )
    assembler = Assembler(tmp_path, wait_s=15)
    later = ("m:9100", T0 + 10_000, "node_exporter")
    assert list(assembler.pending) == [later]
    event = assembler.build(later)
    assert event.memory is not None and event.memory.total_bytes == 8_000_000_000
    assert event.cpu.load_1m is None


def test_otel_points_of_one_collection_split_over_requests_are_one_sample(tmp_path: Path) -> None:
    """An exporter may split one collection over requests, its scrapers stamping points
    milliseconds apart: points of one host within a second join the sample already pending;
    later ones start the next; after the sample is emitted, a straggler of it is late."""
    host = "otel-1"
    assembler = Assembler(tmp_path, wait_s=15)
    assembler.receive({(host, T0, "otel"): {("system.cpu.load_average.1m", ()): 1.0}})
    assembler.receive({(host, T0 + 400, "otel"): {("system.memory.usage", ("used",)): 5.0}})
    assembler.receive({(host, T0 + 2_500, "otel"): {("system.cpu.load_average.1m", ()): 2.0}})
    assert {k: len(p.facts) for k, p in assembler.pending.items()} == {
        (host, T0, "otel"): 2,
        (host, T0 + 2_500, "otel"): 1,
    }
    assembler.build((host, T0, "otel"))
    assembler.emitted([(host, T0, "otel")])
    assembler.receive({(host, T0 + 700, "otel"): {("system.memory.usage", ("free",)): 1.0}})
    assert assembler.stats.late_facts == 1
    assert set(assembler.pending) == {(host, T0 + 2_500, "otel")}


_FULL_DISK = """
import os, resource, sys
from pathlib import Path
from sysmetrics.ingest.assembly import Assembler

directory = Path(sys.argv[1])
assembler = Assembler(directory, wait_s=15)
facts = {("node_memory_MemTotal_bytes", ()): 8e9, ("node_load1", ()): 0.5}
assembler.receive({("first:9100", 1000, "node_exporter"): facts})
assembler.sync()
# The journal may grow by 40 bytes: the next record is longer, so the kernel writes part of
# it and refuses the rest (EFBIG), as a full disk does.
size = os.path.getsize(directory / "journal.jsonl")
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 40, resource.RLIM_INFINITY))
try:
    assembler.receive({("refused:9100", 1000, "node_exporter"): facts})
except OSError as exc:
    print("refused", exc.errno)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
assembler.receive({("after:9100", 1000, "node_exporter"): facts})
assembler.sync()
"""


def test_a_full_disk_mid_append_refuses_the_request_and_keeps_the_journal_whole(
    tmp_path: Path,
) -> None:
    """A real file-size limit: the request whose record cannot be written whole gets an
    OSError (its sender a 503), the part written is cut off, and the request after it, once
    there is room, is in the journal (before the fix it continued the torn line and was lost
    on restart although it had been acknowledged)."""
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "refused 27" in done.stdout  # EFBIG
    for line in (tmp_path / "journal.jsonl").read_bytes().splitlines():
        json.loads(line)
    hosts = {host for host, _, _ in Assembler(tmp_path, wait_s=15).pending}
    assert hosts == {"first:9100", "after:9100"}


def test_requests_appended_together_share_one_fsync(tmp_path: Path) -> None:
    """Group commit: what was appended before an fsync started is durable after it; a request
    appended while it runs waits for the next one."""
    assembler = Assembler(tmp_path, wait_s=15)

    def request(host: str) -> int:
        return assembler.receive({(host, T0, "node_exporter"): PART_1})

    async def scenario() -> None:
        first, second = request("a:9100"), request("b:9100")
        waiting = [asyncio.ensure_future(assembler.durable(n)) for n in (first, second)]
        await asyncio.gather(*waiting)
        assert assembler.synced >= second and assembler.stats.journal_syncs == 1
        third = request("c:9100")
        assert assembler.synced < third
        await assembler.durable(third)
        assert assembler.synced >= third and assembler.stats.journal_syncs == 2
        await assembler.durable(second)  # already durable: no fsync
        assert assembler.stats.journal_syncs == 2
        late = assembler.receive({})  # nothing new: nothing to wait for
        assert late <= assembler.synced

    asyncio.run(scenario())
    hosts = {host for host, _, _ in _restart(assembler, tmp_path).pending}
    assert hosts == {"a:9100", "b:9100", "c:9100"}


_FULL_DISK_AT_EMIT = """
import os, resource, sys
from pathlib import Path
from sysmetrics.ingest.assembly import Assembler

directory = Path(sys.argv[1])
assembler = Assembler(directory, wait_s=0)
facts = {("node_memory_MemTotal_bytes", ()): 8e9, ("node_load1", ()): 0.5}
assembler.receive({("host:9100", 1000, "node_exporter"): facts})
assembler.sync()
keys = assembler.due()
assembler.build(keys[0])  # its event goes into the spool, then:
size = os.path.getsize(directory / "journal.jsonl")
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 10, resource.RLIM_INFINITY))
try:
    assembler.emitted(keys)
except OSError as exc:
    print("refused", exc.errno)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
assembler.receive({("host:9100", 11000, "node_exporter"): facts})
assembler.sync()
"""


def test_an_emit_the_full_disk_refused_is_journaled_with_the_next_append(tmp_path: Path) -> None:
    """A sample emitted while the journal could not say so is not emitted again after a
    restart: its record is written ahead of the next append that fits."""
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK_AT_EMIT, str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "refused 27" in done.stdout
    restarted = Assembler(tmp_path, wait_s=15)
    assert set(restarted.pending) == {("host:9100", 11000, "node_exporter")}
    assert restarted.hosts[("host:9100", "node_exporter")].last_ts == 1000


RECENT = int(time.time() // 10) * 10_000
"""A recent sample time: a retired host's time is kept a day of the wall clock."""


def _scrape(
    assembler: Assembler,
    ts_ms: int,
    up: dict[str, float],
    sender: str | None = None,
    host: str = "web-1",
    node: bool = True,
) -> None:
    """One scrape of ``host`` as Prometheus remote-writes it: node_exporter's series (unless
    ``node`` is False) and ``up`` of each of its targets (job -> value), through the decoder."""
    series = [({"__name__": "up", "job": job}, value) for job, value in up.items()]
    if node:
        series += [({"__name__": n, "job": "node"}, 1.0) for n in ("node_load1", "node_load5")]
    payload = write_request(series, ts_ms, {"instance": host})
    data = bytes(cramjam.snappy.decompress_raw(payload))
    decoded = decode_remote_write(data, "instance", 10**6).samples
    assembler.receive(decoded, sender=sender, named=sender is not None)


def _emit_due(assembler: Assembler, now: float) -> list[tuple[str, int, str]]:
    due = assembler.due(now=now)
    for key in due:
        if key[2] != "target":
            assembler.build(key)
    assembler.emitted(due)
    return due


def test_a_host_whose_last_target_prometheus_drops_is_retired_after_its_samples(
    tmp_path: Path,
) -> None:
    """Prometheus writes the stale marker on a target's ``up`` when its configuration or
    service discovery drops the target (a failed scrape is ``up`` 0). While another target of
    the host is scraped, the host stays; when its last goes, a retirement is due at once,
    after the host's earlier samples (emitted with it), and the host's state goes with it; a
    straggler from before the retirement is late, a later sample is a host anew."""
    assembler = Assembler(tmp_path, wait_s=15)
    _scrape(assembler, RECENT, {"node": 1, "blackbox": 1})
    _emit_due(assembler, math.inf)
    _scrape(assembler, RECENT + 10_000, {"node": 0, "blackbox": STALE_MARKER})
    _emit_due(assembler, math.inf)
    assert assembler.retiring == set(), "a target of the host is still scraped (its scrape fails)"
    _scrape(assembler, RECENT + 20_000, {"node": 1}, node=False)
    assembler.receive({("web-1", RECENT + 20_000, "node_exporter"): {("node_load1", ()): 1.0}})
    assert assembler.due(now=0) == [], "fewer series than the host's last sample: waits"
    _scrape(assembler, RECENT + 30_000, {"node": STALE_MARKER}, node=False)
    retirement = ("web-1", RECENT + 30_000, "target")
    assert assembler.retiring == {retirement}
    assembler = _restart(assembler, tmp_path)
    assert assembler.retiring == {retirement}, "journaled when received"
    assert _emit_due(assembler, 0) == [("web-1", RECENT + 20_000, "node_exporter"), retirement]
    assert assembler.stats.retired == 1 and assembler.stats.emitted_incomplete == 1
    assert assembler.hosts == {} and assembler.targets == {} and assembler.retiring == set()
    for restart in (_restart, lambda a, d: (a.compact(), _restart(a, d))[1]):
        assembler = restart(assembler, tmp_path)
        assert assembler.hosts == {} and assembler.retiring == set(), "the journal says the same"
        assembler.receive({("web-1", RECENT + 20_000, "node_exporter"): PART_2})
        assert assembler.pending == {} and assembler.stats.late_facts == len(PART_2)
    _scrape(assembler, RECENT + 40_000, {"node": 1})
    assert assembler.due(now=math.inf) == [("web-1", RECENT + 40_000, "node_exporter")]


def test_a_retirement_waits_for_a_new_address_as_long_as_host_down_allows(
    tmp_path: Path,
) -> None:
    """Prometheus writes a dropped target's stale marker ~2.1 intervals after its last scrape,
    and its service discovery may start scraping the host's new address later still: with
    Debian's Prometheus, a reload moving a host to another exporter (the same labels), the new
    target's first scrape came 3.4 s after the old one's marker was written (5-s interval), and
    the host was retired, then known anew with its next sample (its alerts resolved), in 2 of 3
    runs. A retirement now waits, at most until HostDown would page the host less 5 s (3
    intervals after its latest sample was emitted): a new target's ``up`` (web-1) or a later
    sample (web-2: its ``up`` in another shard) withdraws it, also when the journal is
    replayed; a host no target comes back for (web-3) is retired then. Before, every one was
    retired at once."""
    assembler = Assembler(tmp_path, wait_s=15)
    hosts = ("web-1", "web-2", "web-3")
    for n in range(3):
        for host in hosts:
            _scrape(assembler, RECENT + n * 20_000, {"node": 1}, host=host)
        _emit_due(assembler, math.inf)
    emitted = time.monotonic()
    for host in hosts:
        _scrape(assembler, RECENT + 60_000, {"node": STALE_MARKER}, host=host, node=False)
    assert {key[0] for key in assembler.retiring} == set(hosts)
    assert assembler.due(now=emitted + 50) == [], "HostDown pages after 60 s: 55 s to wait"
    due_then = [key[0] for key in assembler.due(now=emitted + 56) if key[2] == "target"]
    assert due_then == list(hosts)
    _scrape(assembler, RECENT + 70_000, {"node": 1}, host="web-1")
    _scrape(assembler, RECENT + 70_000, {}, host="web-2")
    assert assembler.retiring == {("web-3", RECENT + 60_000, "target")}
    assert assembler.stats.retirements_withdrawn == 2
    assembler = _restart(assembler, tmp_path)
    assert assembler.retiring == {("web-3", RECENT + 60_000, "target")}, "replayed the same"
    assert _emit_due(assembler, 0) == [
        ("web-1", RECENT + 70_000, "node_exporter"),
        ("web-2", RECENT + 70_000, "node_exporter"),
        ("web-3", RECENT + 60_000, "target"),
    ], "after a restart, when the last emission is not known: at once"
    assert assembler.stats.retired == 1 and "web-3" not in assembler.targets
    assert list(assembler.targets["web-1"]) == [("node", "web-1")], "its new target"


def test_a_dropped_target_does_not_retire_a_host_that_sent_later_or_another_replicas_host(
    tmp_path: Path,
) -> None:
    """The stale marker retires a host only when it is the news: not from the replica of an HA
    pair that does not lead the host (it may have dropped a target the leader keeps), not when
    the host has a later sample, not for a target that is no host of ours (only ``up``)."""
    assembler = Assembler(tmp_path, wait_s=15)
    _scrape(assembler, RECENT, {"node": 1}, sender="prom-a")
    _scrape(assembler, RECENT + 3_000, {"node": 1}, sender="prom-b")
    _scrape(assembler, RECENT + 13_000, {"node": STALE_MARKER}, sender="prom-b", node=False)
    assert assembler.retiring == set(), "prom-b does not lead web-1"
    _scrape(assembler, RECENT + 10_000, {"node": 1}, sender="prom-a")
    _emit_due(assembler, math.inf)
    _scrape(assembler, RECENT + 5_000, {"node": STALE_MARKER}, sender="prom-a", node=False)
    assert assembler.retiring == set(), "older than the host's latest sample (a replayed WAL)"
    _scrape(assembler, RECENT, {"app": 1}, host="app-1:8080", node=False)
    _scrape(assembler, RECENT + 10_000, {"app": STALE_MARKER}, host="app-1:8080", node=False)
    assert assembler.retiring == set() and "app-1:8080" not in assembler.targets
    _scrape(assembler, RECENT + 20_000, {"node": STALE_MARKER}, sender="prom-a", node=False)
    assert assembler.retiring == {("web-1", RECENT + 20_000, "target")}


def test_a_restarted_receiver_still_knows_the_targets_it_heard(tmp_path: Path) -> None:
    """A restart may fall between a host's last scrape and its target's stale marker, and a
    receiver down when Prometheus wrote the marker gets it again from Prometheus' WAL: the
    targets heard before (journaled when new or dropped, once each, and kept by compaction)
    still retire the host. Before, the restarted receiver knew no target, ignored the marker,
    and the host paged HostDown."""
    assembler = Assembler(tmp_path, wait_s=15)

    def jobs() -> list[str]:
        return sorted(labels[0] for labels in assembler.targets.get("web-1", {}))

    for n in range(4):
        _scrape(assembler, RECENT + n * 10_000, {"node": 1, "blackbox": 1})
        _emit_due(assembler, math.inf)
    assert jobs() == ["blackbox", "node"]
    _scrape(assembler, RECENT + 40_000, {"node": 1, "blackbox": STALE_MARKER})
    journal = (tmp_path / "journal.jsonl").read_bytes()
    assert journal.count(b'{"t":') == 2 and journal.count(b'{"d":') == 1, "news only"
    assembler = _restart(assembler, tmp_path)
    assert jobs() == ["node"], "the dropped one stays dropped"
    assembler.compact()
    assembler = _restart(assembler, tmp_path)
    assert jobs() == ["node"], "compaction keeps them"
    _emit_due(assembler, math.inf)
    _scrape(assembler, RECENT + 60_000, {"node": STALE_MARKER}, node=False)
    assert assembler.retiring == {("web-1", RECENT + 60_000, "target")}


def test_a_restart_hands_no_host_to_the_other_replica(tmp_path: Path) -> None:
    """Which replica leads a host is journaled when it changes (and kept by compaction): after
    a restart the leader keeps the host, and the other replica takes it over only as it would
    have without the restart (more than 1.25 intervals after the leader's last sample).
    Before, the first replica to send after a restart led: a switch of replicas, and an event
    at the other replica's moment (3 s after the leader's last, not 10)."""
    for compacted in (False, True):
        directory = tmp_path / f"compacted-{compacted}"
        assembler = Assembler(directory, wait_s=15)
        before = sorted(
            [(t, "prom-a") for t in (0, 10, 20, 30)] + [(t, "prom-b") for t in (3, 13, 23)]
        )
        assert _sent_over_time(assembler, before) == [(t, "prom-a") for t in (0, 10, 20, 30)]
        if compacted:
            assembler.compact()
        assembler = _restart(assembler, directory)
        after = [(33, "prom-b"), (40, "prom-a"), (43, "prom-b"), (50, "prom-a")]
        assert _sent_over_time(assembler, after) == [(40, "prom-a"), (50, "prom-a")]
        journal = (directory / "journal.jsonl").read_bytes()
        assert journal.count(b'{"l":') == 1, "the leader once, not per sample"


def test_a_host_silent_for_a_day_is_forgotten_at_compaction_and_starts_anew(
    tmp_path: Path,
) -> None:
    """Hosts that come and go under new names (autoscaled nodes, containers) were kept in
    memory and in the journal for ever. A host with no sample and no target heard for a day
    is forgotten when the journal is compacted; one whose target Prometheus still scrapes (its
    scrape fails: ``up`` 0) is kept, and so is a live one. The forgotten host, back, is new:
    its first sample waits to be complete, where a known host's with as many series is due."""
    day = 86_400_000
    assembler = Assembler(tmp_path, wait_s=15)
    for host, ts_ms in (("gone", RECENT - 2 * day), ("down", RECENT - 2 * day), ("live", RECENT)):
        _scrape(assembler, ts_ms, {"node": 1}, host=host)
    _emit_due(assembler, math.inf)
    _scrape(assembler, RECENT, {"node": 0}, host="down", node=False)
    assembler.compact()
    kept = assembler
    for _ in range(2):  # after the compaction, and after a restart
        assert {host for host, _ in kept.hosts} == {"down", "live"}
        assert {host for host, _ in kept.emitted_at} == {"down", "live"}
        assert set(kept.targets) == {"down"}  # a target is heard once its host is known
        kept = _restart(kept, tmp_path)
    _scrape(kept, RECENT + 10_000, {"node": 1}, host="live")
    _scrape(kept, RECENT + 10_000, {"node": 1}, host="gone")
    assert kept.due(now=0) == [("live", RECENT + 10_000, "node_exporter")]
    assert kept.due(now=math.inf) == [
        ("gone", RECENT + 10_000, "node_exporter"),
        ("live", RECENT + 10_000, "node_exporter"),
    ]
