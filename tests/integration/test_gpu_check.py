"""scripts/gpu-check.sh, the check users run on a GPU machine, can fail: here (no GPU) against
an `nvidia-smi` that reports one GPU, it must say the sampler saw none and exit 1. The real
comparison was run on an NVIDIA H200 (README, Known limitations)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.kafka_io import SYSMETRICS

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu-check.sh"


def run_check(tmp_path: Path, smi_output: str | None) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if smi_output is not None:
        smi = bin_dir / "nvidia-smi"
        smi.write_text(f"#!/bin/sh\nprintf '%s\\n' '{smi_output}'\n")
        smi.chmod(0o755)
    path = f"{bin_dir}:{Path(SYSMETRICS).parent}:/usr/bin:/bin"
    return subprocess.run(
        ["bash", str(SCRIPT)],
        env={**os.environ, "PATH": path, "SYSMETRICS_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_gpu_the_sampler_does_not_see_is_a_mismatch(tmp_path: Path) -> None:
    result = run_check(tmp_path, "0, NVIDIA H200, GPU-5c5d4e7f-0000-1111-2222-333344445555, 143771")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "MISMATCH" in result.stdout
    assert "sysmetrics saw 0 GPU(s), nvidia-smi 1" in result.stdout


def test_without_a_driver_it_says_so(tmp_path: Path) -> None:
    result = run_check(tmp_path, None)
    assert result.returncode == 2
    assert "no NVIDIA driver" in result.stdout
