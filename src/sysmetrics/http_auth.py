"""What the HTTP servers (dashboard, ingest) share: when an address is loopback or already
taken, and whether an Authorization header carries the token (bearer, or HTTP Basic with any
user name)."""

from __future__ import annotations

import base64
import binascii
import errno
import hmac
import ipaddress
import socket


def is_loopback(host: str) -> bool:
    """Only this machine can connect: ``localhost`` or a loopback IP (not a name like
    ``127.example.com``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def port_holder(port: int) -> str | None:
    """ "pid N (its command line)" of the process listening on TCP ``port``, when this user may
    see it (another user's, or any on macOS without root, is not named): an administrator sees
    at once whether it is a sysmetrics process left running or something else."""
    import psutil

    try:
        pids = {
            c.pid
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid
        }
        for pid in sorted(pids):
            command = " ".join(psutil.Process(pid).cmdline())
            return f"pid {pid} ({command[:120]})"
    except (psutil.Error, OSError):
        return None
    return None


def address_in_use(host: str, port: int) -> bool:
    """Another process listens on ``host:port`` (binding it fails with EADDRINUSE), so a server
    can say so with the setting to change before it starts. Any other failure (an address
    this machine does not have) is left to the server to report."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError:
        return False
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            sock.bind(address)
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def carries_token(authorization: bytes, token: bytes) -> bool:
    """``Bearer <token>`` or ``Basic base64(<any user>:<token>)``, compared in constant time."""
    scheme, _, value = authorization.partition(b" ")
    if scheme.lower() == b"bearer":
        return hmac.compare_digest(value.strip(), token)
    basic = _basic(authorization)
    return basic is not None and hmac.compare_digest(basic[1], token)


def basic_user(authorization: bytes) -> bytes | None:
    """The user name of an HTTP Basic ``Authorization`` header (None: not Basic, or empty)."""
    basic = _basic(authorization)
    return basic[0] if basic is not None and basic[0] else None


def _basic(authorization: bytes) -> tuple[bytes, bytes] | None:
    scheme, _, value = authorization.partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, _, password = decoded.partition(b":")
    return user, password
