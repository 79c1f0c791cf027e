"""Kafka side of the pipeline: client settings, producer with spool, embedded broker, simulator."""
