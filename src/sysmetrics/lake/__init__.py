"""Stage 2: Kafka → time-partitioned raw NDJSON lake with exactly-once files."""
