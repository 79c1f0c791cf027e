"""The dashboard answers while the hourly job rebuilds a large hour: DuckDB lets one process
write at a time, so readers wait out the write (in a worker thread, SYSMETRICS_WAREHOUSE_BUSY_
WAIT_S) instead of failing "warehouse busy"; other requests are served meanwhile. The writer
waits out readers the same way (this test's own lock probes among them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
import uvicorn

from sysmetrics.batch.hourly import run_hour
from sysmetrics.config import Settings
from sysmetrics.dashboard.app import create_app
from sysmetrics.lake.store import LakeStore
from sysmetrics.warehouse.duckdb import DuckDBWarehouse
from tests.support.kafka_io import SYSMETRICS
from tests.support.lakes import HOUR14, write_simulated_fleet
from tests.support.ports import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def locked(path: str) -> bool:
    try:
        duckdb.connect(path, read_only=True).close()
    except duckdb.IOException:
        return True
    return False


def test_pages_load_while_a_large_hour_is_rebuilt(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium missing: run scripts/install-system-deps.sh (apt install chromium)")
    from playwright.sync_api import sync_playwright

    settings = Settings(
        data_dir=tmp_path / "data",
        lake_url=str(tmp_path / "lake"),
        warehouse_url=str(tmp_path / "wh.duckdb"),
    )
    # 400 hosts in the writer's default layout: ~2,900 files of 50 events.
    write_simulated_fleet(tmp_path / "lake", hosts=400, start=HOUR14, hours=1, batch=50)
    wh = DuckDBWarehouse(settings.warehouse_url)
    run_hour(settings, wh, LakeStore(settings.lake_url), HOUR14)
    wh.close()
    port = free_port()
    app = create_app(settings, now=lambda: HOUR14 + timedelta(minutes=59))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    env = {
        **os.environ,
        "SYSMETRICS_DATA_DIR": str(settings.data_dir),
        "SYSMETRICS_LAKE_URL": settings.lake_url,
        "SYSMETRICS_WAREHOUSE_URL": settings.warehouse_url,
    }
    rebuild = subprocess.Popen(
        [SYSMETRICS, "batch", "run", "--hour", f"{HOUR14:%Y-%m-%dT%H}", "--rebuild"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not locked(settings.warehouse_url):
            if rebuild.poll() is not None:
                raise AssertionError(f"the rebuild ended early: {rebuild.communicate()[0]!r}")
            assert time.monotonic() < deadline, "no rebuild seen"
            time.sleep(0.05)
        # A reader that arrives during the write waits for it in a worker thread...
        waiting: dict[str, object] = {}

        def read_fleet() -> None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=60) as answer:
                waiting["status"], waiting["body"] = answer.status, answer.read().decode()

        reader = threading.Thread(target=read_fleet)
        reader.start()
        time.sleep(0.3)
        # ...while the server keeps answering other requests.
        began = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as health:
            assert health.status == 200
        assert time.monotonic() - began < 2
        reader.join(60)
        assert waiting["status"] == 200 and "warehouse busy" not in str(waiting["body"])
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page()
            response = page.goto(f"http://127.0.0.1:{port}/", timeout=60_000)
            assert response is not None and response.status == 200
            assert page.locator("#fleet tbody tr").count() == 50  # the first page of 400 hosts
            assert "warehouse busy" not in page.content()
            browser.close()
        output = rebuild.communicate(timeout=120)[0].decode()
        assert rebuild.returncode == 0, output
        assert "2026-11-27T14Z" in output and "files read" in output
    finally:
        if rebuild.poll() is None:
            rebuild.kill()
        server.should_exit = True
