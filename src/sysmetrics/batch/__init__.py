"""Stage 4: the hourly job as a library (usable with or without Airflow)."""
