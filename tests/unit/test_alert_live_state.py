"""The evaluators' firing-alerts files beside them: several evaluators of one group on one
machine (each holding some partitions) write at once, and the dashboard sees all of them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sysmetrics.alerts.live import FIRING_GLOB, read_firing, write_firing
from sysmetrics.config import load_settings


def alert(rule: str, host: str, **more: object) -> dict[str, object]:
    return {"rule": rule, "host_id": host, "fired_at": "2026-12-03T10:00:00+00:00", **more}


def write_as_another_evaluator(data_dir: Path, updated_at: datetime, firing: list) -> None:
    """``write_firing`` in a process of its own, as a second ``sysmetrics alert`` would."""
    code = (
        "import json, sys; from datetime import datetime; "
        "from sysmetrics.alerts.live import write_firing; "
        "from sysmetrics.config import load_settings; "
        "write_firing(load_settings(data_dir=sys.argv[1]), "
        "datetime.fromisoformat(sys.argv[2]), json.loads(sys.argv[3]))"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(data_dir), updated_at.isoformat(), json.dumps(firing)],
        check=True,
    )


def test_threads_of_one_evaluator_write_its_file_without_failing(tmp_path: Path) -> None:
    """Each write is whole and no writer crashes on another's temporary file (it did:
    FileNotFoundError, found in CI)."""
    settings = load_settings(data_dir=tmp_path)
    failures: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for n in range(400):
                write_firing(settings, datetime.now(UTC), [alert("r", name, n=n)])
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(f"e{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    found = read_firing(settings)
    assert found is not None and [a["n"] for a in found[1]] == [399]
    own = FIRING_GLOB.replace("*", str(os.getpid()))
    assert sorted(p.name for p in (tmp_path / "status").iterdir()) == [own]


def test_two_evaluators_on_one_machine_are_both_seen(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    now = datetime.now(UTC)
    write_as_another_evaluator(
        tmp_path, now - timedelta(seconds=2), [alert("cpu", "a"), alert("memory", "c")]
    )
    write_as_another_evaluator(
        tmp_path, now, [alert("cpu", "b"), alert("disk", "a", value=2), alert("cpu", "a", value=9)]
    )
    found = read_firing(settings)
    assert found is not None
    updated_at, firing = found.updated_at, found.firing
    assert updated_at == now - timedelta(seconds=2)  # the older of the two: what the age says
    # An alert in both files (its partition moved during a rebalance) counts once: the newer.
    assert sorted((a["rule"], a["host_id"], a.get("value")) for a in firing) == [
        ("cpu", "a", 9),
        ("cpu", "b", None),
        ("disk", "a", 2),
        ("memory", "c", None),
    ]


def test_a_stopped_evaluators_file_is_left_out_then_forgotten_as_is_an_upgrades_old_file(
    tmp_path: Path,
) -> None:
    settings = load_settings(data_dir=tmp_path)
    now = datetime.now(UTC)
    write_as_another_evaluator(tmp_path, now - timedelta(minutes=10), [alert("cpu", "gone")])
    found = read_firing(settings)  # every evaluator stopped: the last picture, and its age
    assert found == (now - timedelta(minutes=10), [alert("cpu", "gone")], None)

    write_firing(settings, now, [alert("cpu", "here")])
    found = read_firing(settings)
    assert found is not None and found[1] == [alert("cpu", "here")]

    stale = next(p for p in (tmp_path / "status").glob(FIRING_GLOB) if "gone" in p.read_text())
    two_days_ago = time.time() - 2 * 86_400
    os.utime(stale, (two_days_ago, two_days_ago))
    before_upgrade = tmp_path / "status" / "alerts-firing.json"  # an earlier version's one file
    before_upgrade.write_text(json.dumps({"updated_at": now.isoformat(), "firing": []}))
    write_as_another_evaluator(tmp_path, now, [])  # an evaluator starting removes both
    assert stale.exists() is False
    assert before_upgrade.exists() is False
    assert len(list((tmp_path / "status").glob(FIRING_GLOB))) == 2


def test_an_evaluator_that_does_not_hear_its_brokers_says_since_when(tmp_path: Path) -> None:
    """The earliest of the evaluators that do not hear theirs, for the dashboard to say that
    no host is judged down meanwhile; a file of an earlier version says nothing of it."""
    settings = load_settings(data_dir=tmp_path)
    now = datetime.now(UTC)
    write_as_another_evaluator(tmp_path, now - timedelta(seconds=1), [alert("cpu", "a")])
    assert read_firing(settings) == (now - timedelta(seconds=1), [alert("cpu", "a")], None)
    write_firing(settings, now, [], unheard_since=now - timedelta(seconds=20))
    assert read_firing(settings) == (
        now - timedelta(seconds=1),
        [alert("cpu", "a")],
        now - timedelta(seconds=20),
    )
    code = (
        "import sys; from datetime import datetime, timedelta; "
        "from sysmetrics.alerts.live import write_firing; "
        "from sysmetrics.config import load_settings; "
        "now = datetime.fromisoformat(sys.argv[2]); "
        "write_firing(load_settings(data_dir=sys.argv[1]), now, [], now - timedelta(seconds=45))"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path), now.isoformat()], check=True)
    found = read_firing(settings)
    assert found is not None and found.unheard_since == now - timedelta(seconds=45)
    earlier_version = tmp_path / "status" / FIRING_GLOB.replace("*", "1")
    earlier_version.write_text(json.dumps({"updated_at": now.isoformat(), "firing": []}))
    found = read_firing(settings)
    assert found is not None and found.unheard_since == now - timedelta(seconds=45)
    assert found.updated_at == now - timedelta(seconds=1)


def test_status_says_what_the_evaluators_here_page_and_whether_they_hear_kafka(
    tmp_path: Path,
) -> None:
    """`sysmetrics status`'s alert lines, from the live files beside the evaluators."""
    from sysmetrics.orchestration.health import alert_evaluators

    settings = load_settings(data_dir=tmp_path)
    assert list(alert_evaluators(settings)) == ["alert        not running here"]
    now = datetime.now(UTC)
    write_as_another_evaluator(tmp_path, now - timedelta(minutes=10), [alert("HostDown", "gone")])
    (stopped,) = alert_evaluators(settings)
    assert re.fullmatch(
        r"alert +stopped 60\d s ago; when it stopped, 1 firing: HostDown on gone",
        stopped,
    )
    down = [alert("HostDown", f"h{n}", hostname=f"h{n}.example") for n in range(7)]
    write_firing(settings, now, down, unheard_since=now - timedelta(seconds=30))
    first, second = alert_evaluators(settings)
    assert first == (
        "alert        7 firing: HostDown on h0.example, HostDown on h1.example, HostDown on "
        "h2.example, HostDown on h3.example, HostDown on h4.example and 2 more"
    )
    # 30 s when written; a slow machine may take a second more to read it.
    assert re.match(r" {13}has not heard from Kafka for 3[01] s: ", second), second
    # A central Prometheus gone: its hosts' HostDowns are one phrase, where its first one is.
    via = [alert("HostDown", f"web-{n}", sender="prom-eu-1") for n in range(40)]
    lone = alert("HostDown", "db-1", sender="prom-us-2")
    mixed = [alert("HighCpu", "h0"), *via[:1], lone, alert("HostDown", "laptop"), *via[1:]]
    write_firing(settings, now, mixed)
    assert list(alert_evaluators(settings)) == [
        "alert        43 firing: HostDown on db-1 via prom-us-2, HighCpu on h0, HostDown on "
        "laptop, HostDown on 40 hosts via prom-eu-1"  # in the live file's order (by host)
    ]
