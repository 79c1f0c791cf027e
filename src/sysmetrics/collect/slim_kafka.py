"""confluent_kafka without its serde clients, for the collector process: import this first.

confluent_kafka's package imports its Schema Registry clients (SerializingProducer,
DeserializingConsumer, DeserializingShareConsumer), and with them asyncio and ssl (libssl,
libcrypto): 6 MB of the collector's 34 MB resident memory (`benchmarks/collector.py`),
on every machine of a fleet. The collector uses Producer and AdminClient only. Imported before
confluent_kafka, this module puts placeholders in those clients' modules that say so if called;
in a process that already imported confluent_kafka it changes nothing.
"""

from __future__ import annotations

import sys
import types
from typing import NoReturn

SERDE_CLIENTS = {
    "confluent_kafka.serializing_producer": "SerializingProducer",
    "confluent_kafka.deserializing_consumer": "DeserializingConsumer",
    "confluent_kafka.deserializing_share_consumer": "DeserializingShareConsumer",
}


def _placeholder(name: str) -> type:
    def refuse(*_args: object, **_kwargs: object) -> NoReturn:
        raise RuntimeError(
            f"confluent_kafka.{name} is not loaded in the sysmetrics collector process "
            "(sysmetrics.collect.slim_kafka): use confluent_kafka.Producer"
        )

    return type(name, (), {"__init__": refuse})


def _install() -> None:
    if "confluent_kafka" in sys.modules:
        return
    for module, client in SERDE_CLIENTS.items():
        placeholder = types.ModuleType(module, __doc__)
        setattr(placeholder, client, _placeholder(client))
        sys.modules[module] = placeholder


_install()
