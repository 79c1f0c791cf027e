"""Network counters, total and per interface, cumulative as the OS gives them."""

from __future__ import annotations

import psutil

from sysmetrics.collect._safe import guarded
from sysmetrics.schema import NetInterface, Network, count_or_none, is_loopback


def read_network() -> Network | None:
    per_nic = guarded("network", lambda: psutil.net_io_counters(pernic=True), None)
    if per_nic is None:
        return None
    interfaces = [
        NetInterface(
            name=name[:256],
            bytes_sent=count_or_none(c.bytes_sent),
            bytes_recv=count_or_none(c.bytes_recv),
            packets_sent=count_or_none(c.packets_sent),
            packets_recv=count_or_none(c.packets_recv),
            errin=count_or_none(c.errin),
            errout=count_or_none(c.errout),
            dropin=count_or_none(c.dropin),
            dropout=count_or_none(c.dropout),
        )
        for name, c in sorted(per_nic.items())
    ]
    external = [i for i in interfaces if not is_loopback(i.name)]

    def total(field: str) -> int | None:
        values = [getattr(i, field) for i in external]
        # One interface's counter unknown: the machine's total is too (a sum without it
        # would jump back and forth as that interface comes and goes).
        return None if None in values else count_or_none(sum(values))

    return Network(
        bytes_sent=total("bytes_sent"),
        bytes_recv=total("bytes_recv"),
        packets_sent=total("packets_sent"),
        packets_recv=total("packets_recv"),
        errin=total("errin"),
        errout=total("errout"),
        dropin=total("dropin"),
        dropout=total("dropout"),
        interfaces=interfaces,
    )
