"""The two broker kinds every broker-facing test runs against, behind one small interface."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

from sysmetrics.stream.broker import EmbeddedBroker, stop_pid
from tests.support.ports import free_port


class TestBroker(Protocol):
    @property
    def bootstrap(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def kill(self) -> None: ...


class TansuBroker:
    """Tansu through the project's own EmbeddedBroker, on a free port."""

    def __init__(self, work_dir: Path) -> None:
        self._broker = EmbeddedBroker(work_dir, free_port())

    @property
    def bootstrap(self) -> str:
        return self._broker.bootstrap

    def start(self) -> None:
        self._broker.start()

    def stop(self) -> None:
        self._broker.stop()

    def kill(self) -> None:
        self._broker.kill()


class DurableTansuBroker(TansuBroker):
    """Tansu with its log in S3 (a moto_server S3 emulator): data survives a broker restart."""

    def __init__(self, work_dir: Path) -> None:
        import boto3

        from tests.support.s3 import moto_server

        self._s3_port = free_port()
        self._moto = moto_server(self._s3_port)
        endpoint = f"http://127.0.0.1:{self._s3_port}"
        self._env = {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT": endpoint,
            "AWS_ALLOW_HTTP": "true",
        }
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                s3.create_bucket(Bucket="tansu")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self._broker = EmbeddedBroker(work_dir, free_port(), storage="s3://tansu/")

    def start(self) -> None:
        self._broker.start(env=self._env)

    def close(self) -> None:
        self._broker.stop()
        stop_pid(self._moto.pid, timeout_s=5)
