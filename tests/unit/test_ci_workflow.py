"""The forge CI workflow is valid (actionlint) and runs what it promises on every OS."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def actionlint() -> str:
    found = ROOT / ".tools" / "bin" / "actionlint"
    path = str(found) if found.exists() else shutil.which("actionlint")
    if path is None:
        pytest.skip("actionlint missing: 'make install-dev' builds it when Go is installed")
    return path


def test_workflow_passes_actionlint(tmp_path: Path) -> None:
    result = subprocess.run([actionlint(), str(WORKFLOW)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "ci.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on: ${{ matrix.os }}", "runs-on: 42"))
    assert subprocess.run([actionlint(), str(broken)], capture_output=True).returncode != 0


def test_collector_matrix_covers_the_fleet_and_linux_runs_the_readme_command() -> None:
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    matrix = jobs["collector"]["strategy"]["matrix"]
    assert set(matrix["os"]) == {"ubuntu-latest", "macos-latest", "windows-latest"}
    assert set(matrix["python"]) == {"3.11", "3.13"}
    steps = " ".join(str(s.get("run", "")) for s in jobs["collector"]["steps"])
    assert "pip install -e . " in steps  # the collector alone: no extras
    assert "collect --once --print" in steps and "jsonschema.validate" in steps
    for path in steps.split():
        if path.startswith("tests/"):
            assert (ROOT / path).exists(), path
    assert any(s.get("run") == "make test" for s in jobs["full"]["steps"])


def test_the_image_job_builds_the_compose_files_dockerfile_and_checks_the_codecs() -> None:
    """The compose files build deploy/Dockerfile with the repository as context; the forge
    builds it the same way and starts it (no engine runs where the suite runs)."""
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["image"]["steps"]
    runs = [str(s.get("run", "")) for s in steps]
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    build = compose["services"]["lake-writer"]["build"]
    assert (build["context"], build["dockerfile"]) == ("..", "deploy/Dockerfile")
    assert any(
        "docker build --file deploy/Dockerfile" in r and r.rstrip().endswith(" .") for r in runs
    )
    assert any("wire._NATIVE, wire._NATIVE_OTLP, lines._VALIDATOR" in r for r in runs)
