"""An S3 lake for tests: moto's S3 server as a real process, reached through a TCP proxy that
can cut the network. moto keeps objects in memory, so an outage is the network going away
(connections refused and dropped), not the server stopping."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from sysmetrics.stream.broker import stop_pid
from tests.support.ports import free_port
from tests.support.waiting import wait_for

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "sysmetrics-test",
    "AWS_SECRET_ACCESS_KEY": "sysmetrics-test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def moto_server(port: int) -> subprocess.Popen[bytes]:
    """moto's S3 (and other AWS APIs) server on 127.0.0.1:port."""
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _pump(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    for s in (source, target):
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)


class FakeS3:
    def __init__(self) -> None:
        self._server_port = free_port()
        self.port = free_port()
        self._server: subprocess.Popen[bytes] | None = None
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        os.environ.update(CREDENTIALS)  # s3fs and boto3 in this process; children inherit

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_server(self) -> None:
        self._server = moto_server(self._server_port)
        self.start()
        wait_for(self._answers, 30, "moto's S3 server")

    def _answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self._server_port), timeout=1).close()
        except OSError:
            return False
        return True

    def create_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint).create_bucket(Bucket=name)

    def start(self) -> None:
        """The network is up: the proxy listens again on the same port."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                server = socket.create_connection(("127.0.0.1", self._server_port))
            except OSError:
                client.close()
                continue
            self._open += [client, server]
            threading.Thread(target=_pump, args=(client, server), daemon=True).start()
            threading.Thread(target=_pump, args=(server, client), daemon=True).start()

    def stop(self) -> None:
        """The network is down: connections refused, those open dropped."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            self._listener.close()
            self._listener = None
        for s in self._open:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self._open = []

    def close(self) -> None:
        self.stop()
        if self._server is not None:
            stop_pid(self._server.pid, timeout_s=10)
