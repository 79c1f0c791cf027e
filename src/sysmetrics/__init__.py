"""sysmetrics: machine metrics → Kafka → raw lake → hourly analytics."""

__version__ = "0.1.0"
