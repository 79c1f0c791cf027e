"""The collector as a Windows service (pywin32's service framework; pywin32 comes with the
``wmi`` dependency on Windows). ``sysmetrics service install`` registers it with
``python -m sysmetrics.collect.service.windows --startup auto install`` and starts it."""

from __future__ import annotations

import logging
import os
import threading

import servicemanager
import win32service
import win32serviceutil

from sysmetrics.collect.service import SERVICE_NAME, windows_data_dir
from sysmetrics.logs import configure_logging


class CollectorService(win32serviceutil.ServiceFramework):
    _svc_name_ = SERVICE_NAME
    _svc_display_name_ = "sysmetrics collector"
    _svc_description_ = "Samples this machine every 10 s and publishes the metrics to Kafka."

    def __init__(self, args: list[str]) -> None:
        super().__init__(args)
        self.stop = threading.Event()

    def SvcStop(self) -> None:
        self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING)
        self.stop.set()

    def SvcDoRun(self) -> None:
        data = windows_data_dir()
        os.environ.setdefault("SYSMETRICS_CONFIG", str(data / "collector.toml"))
        os.environ.setdefault("SYSMETRICS_DATA_DIR", str(data / "state"))
        # No supervisor keeps a service's stderr here: the log is a file of its own, rotated.
        configure_logging(logging.INFO, data / "logs" / "collector.log")
        servicemanager.LogInfoMsg(f"{SERVICE_NAME} starting")
        from sysmetrics.collect.loop import run_collector
        from sysmetrics.collect.settings import CollectorSettings
        from sysmetrics.config import load_settings

        run_collector(CollectorSettings.of(load_settings()), self.stop)


if __name__ == "__main__":
    win32serviceutil.HandleCommandLine(CollectorService)
