"""Run the collector as a service of the OS, so that it starts at boot and restarts on failure.

One plan per OS, written from templates shipped with the package:
- Linux: a systemd unit (system-wide: transient user, state directory for the spool, the config
  handed in as a credential, sandboxed; or ``--user``: a user unit);
- macOS: a launchd daemon (or ``--user``: agent) with KeepAlive;
- Windows: a service registered with the Service Control Manager (``service/windows.py``).
The collector's config file goes where the OS keeps such files, readable only by the service.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from pydantic import SecretStr

from sysmetrics.config import Settings

SERVICE_NAME = "sysmetrics-collector"
LAUNCHD_LABEL = "dev.sysmetrics.collector"
COLLECTOR_KEYS = (
    "bootstrap_servers",
    "topic",
    "security_protocol",
    "sasl_mechanism",
    "sasl_username",
    "sasl_password",
    "ssl_ca_location",
    "sample_interval_s",
    "host_id",
    "spool_max_bytes",
)
"""The settings a collector uses: what its config file holds."""


class ServiceError(RuntimeError):
    """The service could not be installed, removed or queried; the text says what to do."""


@dataclass(frozen=True)
class ServiceFile:
    path: Path
    content: str
    mode: int


@dataclass(frozen=True)
class ServicePlan:
    """What ``install`` writes and runs on one OS; ``uninstall`` undoes it."""

    system: str  # "systemd", "launchd" or "windows"
    user: bool
    unit: ServiceFile
    config: ServiceFile
    state_dir: Path
    logs: str
    enable: tuple[tuple[str, ...], ...]
    disable: tuple[tuple[str, ...], ...]
    query: tuple[str, ...]

    @property
    def files(self) -> tuple[ServiceFile, ...]:
        return (self.config, self.unit) if self.system != "windows" else (self.config,)


def collector_config(settings: Settings) -> str:
    """The collector's settings as the TOML file the service reads (secrets included)."""
    lines = ["# sysmetrics collector settings (written by `sysmetrics service install`)."]
    for key in COLLECTOR_KEYS:
        value = getattr(settings, key)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        # JSON string escapes are valid TOML basic-string escapes.
        lines.append(f"{key} = {json.dumps(value) if isinstance(value, str) else value}")
    return "\n".join(lines) + "\n"


def windows_data_dir() -> Path:
    """%ProgramData%\\sysmetrics: the collector's config, state and logs on Windows."""
    return Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "sysmetrics"


def _template(name: str, **values: str) -> str:
    text = (resources.files(__package__) / "templates" / name).read_text()
    return Template(text).substitute(values)


def _systemd_quote(word: str) -> str:
    return f'"{word}"' if any(c.isspace() or c in "\"'\\" for c in word) else word


def _plist_string(word: str) -> str:
    escaped = word.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f"    <string>{escaped}</string>"


def collector_command(python: str | None = None) -> list[str]:
    """How the service starts the collector: this installation's interpreter, by module."""
    return [python or sys.executable, "-m", "sysmetrics", "--log-level", "info", "collect"]


def plan(
    settings: Settings,
    *,
    user: bool = False,
    root: Path = Path("/"),
    platform: str = sys.platform,
    home: Path | None = None,
    python: str | None = None,
) -> ServicePlan:
    """The files and commands of a collector service on ``platform``. ``root`` puts every
    file under another root (an image being built, a test); nothing is started there."""
    home = home or Path.home()

    def at(path: Path) -> Path:
        return root / path.relative_to(path.anchor) if root != Path("/") else path

    command = collector_command(python)
    interval = f"{settings.sample_interval_s:g}"
    toml = collector_config(settings)
    if platform.startswith("linux"):
        config = (
            home / ".config" / "sysmetrics" / "collector.toml"
            if user
            else Path("/etc/sysmetrics/collector.toml")
        )
        unit_dir = home / ".config/systemd/user" if user else Path("/etc/systemd/system")
        unit_text = _template(
            "systemd-user.service" if user else "systemd-system.service",
            exec_start=" ".join(_systemd_quote(w) for w in command),
            config=str(config),
            interval=interval,
        )
        systemctl = ("systemctl", "--user") if user else ("systemctl",)
        state = home / ".local/state/sysmetrics" if user else Path("/var/lib/sysmetrics")
        return ServicePlan(
            system="systemd",
            user=user,
            unit=ServiceFile(at(unit_dir / f"{SERVICE_NAME}.service"), unit_text, 0o644),
            config=ServiceFile(at(config), toml, 0o600),
            state_dir=at(state),
            logs=f"journalctl {'--user ' if user else ''}-u {SERVICE_NAME}",
            enable=((*systemctl, "daemon-reload"), (*systemctl, "enable", "--now", SERVICE_NAME)),
            disable=((*systemctl, "disable", "--now", SERVICE_NAME),),
            query=(*systemctl, "status", "--no-pager", SERVICE_NAME),
        )
    if platform == "darwin":
        base = home / "Library" if user else Path("/Library")
        support = base / "Application Support" / "sysmetrics"
        plist = base / ("LaunchAgents" if user else "LaunchDaemons") / f"{LAUNCHD_LABEL}.plist"
        log_file = base / "Logs" / "sysmetrics" / "collector.log"
        domain = f"gui/{os.getuid()}" if user else "system"
        return ServicePlan(
            system="launchd",
            user=user,
            unit=ServiceFile(
                at(plist),
                _template(
                    "launchd.plist",
                    label=LAUNCHD_LABEL,
                    program_arguments="\n".join(_plist_string(w) for w in command),
                    config=str(support / "collector.toml"),
                    state_dir=str(support / "state"),
                    log_file=str(log_file),
                ),
                0o644,
            ),
            config=ServiceFile(at(support / "collector.toml"), toml, 0o600),
            state_dir=at(support / "state"),
            logs=str(log_file),
            enable=(("launchctl", "bootstrap", domain, str(plist)),),
            disable=(("launchctl", "bootout", f"{domain}/{LAUNCHD_LABEL}"),),
            query=("launchctl", "print", f"{domain}/{LAUNCHD_LABEL}"),
        )
    if platform == "win32":
        if user:
            raise ServiceError("Windows services are machine-wide: run without --user as admin")
        data = windows_data_dir()
        config = data / "collector.toml"
        runner = (python or sys.executable, "-m", "sysmetrics.collect.service.windows")
        return ServicePlan(
            system="windows",
            user=False,
            unit=ServiceFile(at(config), toml, 0o600),
            config=ServiceFile(at(config), toml, 0o600),
            state_dir=at(data / "state"),
            logs=str(data / "logs" / "collector.log"),
            enable=(
                # Only SYSTEM (the service) and Administrators may read the credentials.
                (
                    "icacls",
                    str(config),
                    "/inheritance:r",
                    "/grant:r",
                    "SYSTEM:F",
                    "Administrators:F",
                ),
                (*runner, "--startup", "auto", "install"),
                (*runner, "start"),
            ),
            disable=((*runner, "stop"), (*runner, "remove")),
            query=("sc.exe", "query", SERVICE_NAME),
        )
    raise ServiceError(f"no service manager support for platform {platform!r}")


def _run(commands: tuple[tuple[str, ...], ...], check: bool) -> list[str]:
    done = []
    for command in commands:
        if shutil.which(command[0]) is None and not Path(command[0]).is_file():
            raise ServiceError(f"{command[0]} not found: is this machine's service manager up?")
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0 and check:
            raise ServiceError(
                f"{' '.join(command)} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()}"
            )
        done.append(" ".join(command))
    return done


def install(plan: ServicePlan, start: bool = True) -> list[str]:
    """Write the config and service files (config readable by the service only), then enable
    and start the service when ``start``. Returns what was done, one line each."""
    done = []
    for file in plan.files:
        file.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.path.with_name(f".{file.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, file.mode)
        with os.fdopen(fd, "w") as out:
            out.write(file.content)
        os.chmod(tmp, file.mode)
        os.replace(tmp, file.path)
        done.append(f"wrote {file.path} (mode {file.mode:o})")
    if start:
        try:
            done += [f"ran {c}" for c in _run(plan.enable, check=True)]
        except ServiceError as exc:
            raise ServiceError(f"{exc}\n{_not_started(plan, str(exc))}") from None
    return done


def _not_started(plan: ServicePlan, error: str) -> str:
    """What to do when the files are written but the service manager did not take them."""
    flag = " --user" if plan.user else ""
    why = ""
    if plan.system == "systemd" and plan.user and "Failed to connect to bus" in error:
        why = (
            "no systemd user manager runs for this login (an SSH or container session without "
            "one): install from a login that has it (`loginctl enable-linger` keeps the service "
            "running after logout), or as root without --user. "
        )
    return (
        f"{why}The files are written ({plan.unit.path}, {plan.config.path}): once the service "
        f"manager answers, run `sysmetrics service install{flag}` again; "
        f"`sysmetrics service uninstall{flag}` removes them."
    )


COLLECTOR_PACKAGES = ("sysmetrics", "confluent_kafka", "psutil", "msgspec")
"""What the collector process imports, by top-level package."""


def uncompiled_packages() -> dict[str, Path]:
    """The collector's packages installed without their bytecode (uv does not compile it unless
    asked; pip does), each with the folder that holds it. A system service may not write it
    (``ProtectSystem=strict``), so it would compile them from source at every start and keep
    ~5 MB more resident."""
    missing = {}
    for name in COLLECTOR_PACKAGES:
        spec = importlib.util.find_spec(name)
        source = spec.origin if spec is not None else None
        if source is None or not source.endswith(".py"):
            continue
        if not Path(importlib.util.cache_from_source(source)).exists():
            missing[name] = Path(source).parent.parent
    return missing


def spooled_events(state_dir: Path) -> int:
    """Events in the collector's spool under ``state_dir`` not yet acknowledged by Kafka."""
    from sysmetrics.stream.spool import Spool

    spool_root = state_dir / "spool"
    if not spool_root.is_dir():
        return 0
    return sum(Spool(d, 1 << 40).pending for d in spool_root.iterdir() if d.is_dir())


def uninstall(plan: ServicePlan, stop: bool = True) -> list[str]:
    """Stop and remove the service and its config; the state folder goes too, unless its
    spool still holds events (then it stays, and the returned lines say so)."""
    done = [f"ran {c}" for c in _run(plan.disable, check=False)] if stop else []
    for file in plan.files:
        if file.path.exists():
            file.path.unlink()
            done.append(f"removed {file.path}")
    pending = spooled_events(plan.state_dir)
    if pending:
        done.append(
            f"kept {plan.state_dir}: its spool holds {pending} events not yet delivered to "
            "Kafka (reinstall to deliver them, or delete the folder to discard them)"
        )
    elif plan.state_dir.exists():
        shutil.rmtree(plan.state_dir)
        done.append(f"removed {plan.state_dir}")
    for folder in {f.path.parent for f in plan.files} | {plan.state_dir.parent}:
        # Our own folders only, and only when nothing is left in them.
        if folder.name == "sysmetrics" and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            done.append(f"removed {folder}")
    if stop and plan.system == "systemd":
        _run((plan.enable[0],), check=False)  # daemon-reload: forget the removed unit
    return done


def status(plan: ServicePlan) -> tuple[bool, str]:
    """(installed, the service manager's own words about it)."""
    installed = plan.unit.path.exists()
    if shutil.which(plan.query[0]) is None:
        return installed, f"{plan.query[0]} not available here"
    result = subprocess.run(plan.query, capture_output=True, text=True, timeout=60)
    return installed, (result.stdout or result.stderr).strip()
