"""Scheduling of the hourly job: the Airflow DAG (thin) and a scheduler for use without it."""
