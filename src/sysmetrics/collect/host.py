"""Host identity: a stable host_id (machine-id / IOPlatformUUID / MachineGuid), name, os, arch."""

from __future__ import annotations

import platform
import re
import socket
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psutil

from sysmetrics.collect._safe import guarded, read_text
from sysmetrics.schema import Host

_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")


def sanitize_host_id(raw: str) -> str:
    """Map any id to the schema's safe alphabet (letters, digits, . _ : -), 128 chars max."""
    cleaned = _UNSAFE.sub("-", raw.strip()).lstrip("._:-")[:128]
    return cleaned or f"mac-{uuid.getnode():012x}"


_IOREG_UUID = re.compile(r'"IOPlatformUUID" = "([^"]+)"')


def parse_ioreg_platform_uuid(text: str) -> str | None:
    """``ioreg -rd1 -c IOPlatformExpertDevice``: the Mac's hardware UUID (survives reinstalls;
    the logic board's, so a Mac restored from another one's backup still reports its own)."""
    match = _IOREG_UUID.search(text)
    return match.group(1) if match else None


def _platform_id(root: Path) -> str | None:
    if sys.platform.startswith("linux"):
        return read_text(root / "etc" / "machine-id") or read_text(
            root / "var" / "lib" / "dbus" / "machine-id"
        )
    if sys.platform == "darwin":
        out = subprocess.run(
            ["ioreg", "-rd1", "-c", "IOPlatformExpertDevice"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
        return parse_ioreg_platform_uuid(out)
    if sys.platform == "win32":
        import winreg

        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"SOFTWARE\Microsoft\Cryptography") as key:
            return str(winreg.QueryValueEx(key, "MachineGuid")[0])
    return None


_SHARED_IDS = frozenset({"", "uninitialized", "0" * 32, "00000000-0000-0000-0000-000000000000"})
"""Machine ids that images ship before first boot: every machine built from them shares it."""
_CLONE_FIX = (
    "every machine with this id will be merged into one host: give each its own "
    "(`systemd-machine-id-setup` after deleting /etc/machine-id, or set SYSMETRICS_HOST_ID)"
)


def _in_container(root: Path) -> bool:
    if (root / ".dockerenv").exists() or (root / "run" / ".containerenv").exists():
        return True
    cgroup = read_text(root / "proc" / "1" / "cgroup") or ""
    return any(word in cgroup for word in ("docker", "kubepods", "containerd", "libpod"))


def host_id_warning(root: Path = Path("/"), host_id_override: str | None = None) -> str | None:
    """Why this machine's id is probably shared with other machines, or None.

    Cloned VMs and containers are the common cases: their /etc/machine-id comes from the image,
    so several machines publish as one host (the hourly job flags it as duplicate_host_id)."""
    if host_id_override:
        return None
    raw_id = guarded("host.id", lambda: _platform_id(root), None)
    if raw_id is None:
        return f"no machine id found: host_id falls back to the MAC address; {_CLONE_FIX}"
    if raw_id.strip().lower() in _SHARED_IDS:
        return f"machine id {raw_id!r} is an image placeholder; {_CLONE_FIX}"
    if sys.platform.startswith("linux") and _in_container(root):
        return (
            "running in a container: its machine id comes from the image and is shared by "
            f"every container started from it; {_CLONE_FIX}"
        )
    return None


def read_host(root: Path = Path("/"), host_id_override: str | None = None) -> Host:
    raw_id = host_id_override or guarded("host.id", lambda: _platform_id(root), None)
    boot = guarded("host.boot_time", psutil.boot_time, None)
    return Host(
        host_id=sanitize_host_id(raw_id or ""),
        hostname=socket.gethostname()[:256] or "unknown",
        os=platform.system().lower() or "unknown",
        arch=platform.machine().lower() or "unknown",
        boot_time=datetime.fromtimestamp(int(boot), UTC) if boot else None,
    )
