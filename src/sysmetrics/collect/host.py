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
        match = re.search(r'"IOPlatformUUID" = "([^"]+)"', out)
        return match.group(1) if match else None
    if sys.platform == "win32":
        import winreg

        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"SOFTWARE\Microsoft\Cryptography") as key:
            return str(winreg.QueryValueEx(key, "MachineGuid")[0])
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
