"""Alerts in seconds: rules evaluated on the stream as samples arrive (`sysmetrics alert`)."""
