"""`sysmetrics service`: the systemd unit passes systemd-analyze, its ExecStart really collects
into a broker, install/uninstall leave nothing behind, the launchd plist is what launchd needs."""

from __future__ import annotations

import dataclasses
import os
import plistlib
import shlex
import shutil
import signal
import subprocess
import tomllib
from pathlib import Path

import pytest
from pydantic import SecretStr

from sysmetrics.collect import service as svc
from sysmetrics.config import Settings
from sysmetrics.schema import decode
from sysmetrics.stream.spool import Spool
from tests.support.kafka_io import SYSMETRICS, read_topic

SECRET = "s3cret-pa$$word"


def secured(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "sasl_username": "collector",
            "sasl_password": SecretStr(SECRET),
            "sasl_mechanism": "SCRAM-SHA-512",
        }
    )


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def verify(unit: Path, user: bool, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700, exist_ok=True)
    return subprocess.run(
        ["systemd-analyze", "verify", *(["--user"] if user else []), str(unit)],
        capture_output=True,
        text=True,
        env=dict(os.environ, XDG_RUNTIME_DIR=str(runtime)),
        timeout=60,
    )


@pytest.mark.parametrize("user", [False, True])
def test_systemd_unit_passes_systemd_analyze_verify(
    settings: Settings, tmp_path: Path, user: bool
) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze missing: apt install systemd")
    plan = svc.plan(settings, user=user, root=tmp_path / "root", platform="linux")
    svc.install(plan, start=False)
    result = verify(plan.unit.path, user, tmp_path)
    # verify exits 0 even for settings it ignores; a clean unit prints nothing at all.
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")
    broken = tmp_path / "broken.service"
    broken.write_text(plan.unit.content.replace("Restart=always", "Restart=sometimes"))
    assert "restart specifier" in verify(broken, user, tmp_path).stderr


def test_system_unit_is_sandboxed_and_keeps_credentials_root_only(
    settings: Settings, tmp_path: Path
) -> None:
    plan = svc.plan(secured(settings), root=tmp_path, platform="linux")
    svc.install(plan, start=False)
    unit = plan.unit.path.read_text()
    for line in (
        "Restart=always",
        "DynamicUser=yes",
        "StateDirectory=sysmetrics",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "NoNewPrivileges=yes",
        "LoadCredential=collector.toml:/etc/sysmetrics/collector.toml",
        "Environment=SYSMETRICS_CONFIG=%d/collector.toml",
    ):
        assert line in unit.splitlines()
    assert "ProtectKernelTunables=yes" in unit  # /proc/sys and /sys stay readable
    assert "PrivateDevices" not in unit  # NVML needs /dev/nvidia*
    assert plan.config.path.stat().st_mode & 0o777 == 0o600
    config = tomllib.loads(plan.config.path.read_text())
    assert config["sasl_password"] == SECRET and config["sasl_username"] == "collector"


def test_the_units_exec_start_collects_into_the_broker(
    tansu_settings: Settings, tmp_path: Path
) -> None:
    """Run ExecStart with the environment and credential the unit gives it."""
    settings = tansu_settings.model_copy(update={"sample_interval_s": 1.0})
    plan = svc.plan(settings, root=tmp_path / "root", platform="linux")
    svc.install(plan, start=False)
    lines = plan.unit.path.read_text().splitlines()
    state, credentials = tmp_path / "state", tmp_path / "credentials"
    credentials.mkdir()
    shutil.copy(plan.config.path, credentials / "collector.toml")  # what LoadCredential does
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for line in lines:
        if line.startswith("Environment="):
            name, value = line.removeprefix("Environment=").split("=", 1)
            env[name] = value.replace("%S", str(state)).replace("%d", str(credentials))
    (exec_start,) = [line.removeprefix("ExecStart=") for line in lines if "ExecStart=" in line]
    collector = subprocess.Popen(
        shlex.split(exec_start), env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        messages = read_topic(settings, expected=2, timeout_s=60)
    finally:
        collector.send_signal(signal.SIGTERM)
        _, stderr = collector.communicate(timeout=30)
    assert collector.returncode == 0, stderr
    assert len(messages) >= 2, stderr
    event = decode(messages[0].value() or b"")
    assert event.interval_s == 1.0
    assert (state / "sysmetrics" / "spool").is_dir()  # the spool lives in the state directory


@pytest.mark.parametrize(
    ("platform", "user"), [("linux", False), ("linux", True), ("darwin", True)]
)
def test_install_then_uninstall_leaves_no_file_behind(
    settings: Settings, tmp_path: Path, platform: str, user: bool
) -> None:
    root = tmp_path / "root"
    plan = svc.plan(settings, user=user, root=root, platform=platform, home=Path("/home/ops"))
    svc.install(plan, start=False)
    assert files_under(root) == sorted(f.path for f in plan.files)
    plan.state_dir.mkdir(parents=True)  # the collector ran and its spool is drained
    Spool(plan.state_dir / "spool" / "host-1", 1 << 20).close()
    done = svc.uninstall(plan, stop=False)
    assert files_under(root) == [], done
    assert not plan.state_dir.exists()


def test_a_service_manager_that_refuses_leaves_the_files_and_says_what_to_do(
    settings: Settings, tmp_path: Path
) -> None:
    """Before 2026-12-06 every failure ended "(system services need root / Administrator)":
    also a `--user` install as root over SSH, where systemctl finds no user manager ("Failed to
    connect to bus"), and the files it had written went unmentioned. The refusals here are
    real processes answering as systemctl does."""
    plan = svc.plan(settings, user=True, root=tmp_path, platform="linux")
    no_bus = ("sh", "-c", "echo 'Failed to connect to bus: No medium found' >&2; exit 1")
    for enable, reason in ((no_bus, "no systemd user manager runs"), (("false",), None)):
        with pytest.raises(svc.ServiceError) as refused:
            svc.install(dataclasses.replace(plan, enable=(enable,)))
        said = str(refused.value)
        assert said.startswith(f"{' '.join(enable)} failed (1)"), said
        assert (reason in said) if reason else "user manager" not in said, said
        assert f"The files are written ({plan.unit.path}, {plan.config.path})" in said
        assert "`sysmetrics service uninstall --user` removes them" in said
        assert plan.unit.path.is_file() and plan.config.path.is_file()
        svc.uninstall(plan, stop=False)
    assert files_under(tmp_path) == []


def test_uninstall_keeps_a_spool_that_still_holds_events_and_says_so(
    settings: Settings, tmp_path: Path
) -> None:
    plan = svc.plan(settings, root=tmp_path, platform="linux")
    svc.install(plan, start=False)
    spool = Spool(plan.state_dir / "spool" / "host-1", 1 << 20)
    spool.append(b"host-1", b'{"not": "delivered"}')
    spool.close()
    done = svc.uninstall(plan, stop=False)
    assert not plan.unit.path.exists() and not plan.config.path.exists()
    assert any("spool holds 1 events not yet delivered" in line for line in done)
    assert plan.state_dir.is_dir()


def test_cli_round_trip_and_print_writes_nothing(settings: Settings, tmp_path: Path) -> None:
    env = dict(os.environ, SYSMETRICS_SASL_PASSWORD=SECRET)
    root = tmp_path / "root"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SYSMETRICS, "service", *args, "--root", str(root)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    printed = run("install", "--print")
    assert printed.returncode == 0, printed.stderr
    assert "ExecStart=" in printed.stdout and SECRET not in printed.stdout
    assert not root.exists()
    assert run("status").returncode == 1
    assert run("install").returncode == 0
    assert "installed" in run("status").stdout
    removed = run("uninstall")
    assert removed.returncode == 0 and "removed" in removed.stdout
    assert files_under(root) == []


def test_launchd_plist_has_what_launchd_needs(settings: Settings, tmp_path: Path) -> None:
    for user in (False, True):
        plan = svc.plan(
            settings, user=user, root=tmp_path, platform="darwin", home=Path("/Users/a")
        )
        plist = plistlib.loads(plan.unit.content.encode())
        assert plist["Label"] == svc.LAUNCHD_LABEL
        assert plist["ProgramArguments"][-1] == "collect"
        assert Path(plist["ProgramArguments"][0]).is_absolute()
        assert plist["KeepAlive"] is True and plist["RunAtLoad"] is True
        assert plist["EnvironmentVariables"]["SYSMETRICS_CONFIG"].endswith(
            "Application Support/sysmetrics/collector.toml"
        )
        folder = "LaunchAgents" if user else "LaunchDaemons"
        assert plan.unit.path.parent.name == folder
        assert plan.enable[0][:2] == ("launchctl", "bootstrap")


def test_windows_plan_locks_the_config_to_the_service(settings: Settings) -> None:
    plan = svc.plan(settings, platform="win32")
    assert plan.config.path.parts[-2:] == ("sysmetrics", "collector.toml")
    commands = [" ".join(c) for c in plan.enable]
    assert commands[0].startswith("icacls") and "/inheritance:r" in commands[0]
    assert commands[1].endswith("sysmetrics.collect.service.windows --startup auto install")
    with pytest.raises(svc.ServiceError, match="machine-wide"):
        svc.plan(settings, user=True, platform="win32")


def test_install_says_how_to_compile_the_bytecode_a_sandboxed_service_cannot_write(
    tmp_path: Path,
) -> None:
    """Installed by uv without --compile-bytecode (here: a bytecode cache folder of its own,
    empty), the collector's packages have none; the sandboxed unit could not write it. The
    note's command, run as printed, compiles it, and the next install says nothing."""
    cache = tmp_path / "pycache"
    env = dict(os.environ, PYTHONPYCACHEPREFIX=str(cache))
    root = tmp_path / "root"

    def install() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SYSMETRICS, "service", "install", "--root", str(root)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    first = install()
    assert first.returncode == 0, first.stderr
    note = first.stderr.split("note: ", 1)[1]
    assert note.startswith("sysmetrics, confluent_kafka, psutil, msgspec have no compiled bytecode")
    command = shlex.split(note.split("Compile them once: sudo ", 1)[1])
    subprocess.run(command, env=env, check=True, timeout=600)
    second = install()
    assert second.returncode == 0 and "note:" not in second.stderr, second.stderr
    # Where it is compiled (the test environment, as `make install-dev` leaves it): no note.
    cached = subprocess.run(
        [SYSMETRICS, "service", "install", "--root", str(tmp_path / "other")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cached.returncode == 0 and "note:" not in cached.stderr, cached.stderr
