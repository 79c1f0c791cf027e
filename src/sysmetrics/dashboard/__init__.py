"""Stage 5: what an administrator looks at: fleet overview, per-host charts, alerts."""
