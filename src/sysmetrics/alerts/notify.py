"""Notifications: Alertmanager's API v2, or a plain webhook in Alertmanager's payload shape.

Firing alerts are re-sent every ``resend_s`` with ``endsAt`` ahead (four resends, as Prometheus
does), so Alertmanager resolves them by itself if the evaluator dies; a resolved alert is sent
with its own ``endsAt``. A receiver that is down delays notifications, never drops them: they
wait in the outbox and are retried with exponential backoff (up to a minute).
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sysmetrics.alerts.evaluator import Alert, Change
from sysmetrics.alerts.rules import Rule

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 15.0


def labels(alert: Alert, rule: Rule) -> dict[str, str]:
    named = {
        **rule.labels,
        "alertname": alert.rule,
        "host_id": alert.host_id,
        "hostname": alert.hostname,
        "severity": rule.severity,
    }
    if alert.sender is not None:
        named["sender"] = alert.sender
    return named


def summary(alert: Alert, rule: Rule) -> str:
    fields = {
        "alertname": alert.rule,
        "host_id": alert.host_id,
        "hostname": alert.hostname,
        "value": alert.value if alert.value is not None else float("nan"),
        "threshold": rule.threshold,
        "intervals": rule.intervals,
        "sender": alert.sender or "",
    }
    try:
        return rule.summary.format(**fields)
    except (KeyError, ValueError, IndexError) as exc:
        return f"{alert.rule} on {alert.hostname} (summary template: {exc})"


def api_alert(change: Change, rule: Rule, resend_s: float, now: datetime) -> dict[str, Any]:
    """One alert as Alertmanager's POST /api/v2/alerts takes it."""
    alert = change.alert
    ends = (
        alert.resolved_at or now
        if change.status == "resolved"
        else now + timedelta(seconds=4 * resend_s)
    )
    return {
        "labels": labels(alert, rule),
        "annotations": {
            "summary": summary(alert, rule),
            "value": "" if alert.value is None else f"{alert.value:g}",
        },
        "startsAt": (alert.fired_at or alert.active_since).isoformat(),
        "endsAt": ends.isoformat(),
        "generatorURL": f"/host?id={alert.host_id}",
    }


def webhook_payload(alerts: list[dict[str, Any]]) -> dict[str, Any]:
    """Alertmanager's webhook body (version 4) for receivers that expect it."""
    status = "firing" if any(_is_firing(a) for a in alerts) else "resolved"
    return {
        "version": "4",
        "groupKey": "{}:{}",
        "status": status,
        "receiver": "sysmetrics",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "",
        "truncatedAlerts": 0,
        "alerts": [
            {**a, "status": "firing" if _is_firing(a) else "resolved", "fingerprint": ""}
            for a in alerts
        ],
    }


def _is_firing(alert: dict[str, Any]) -> bool:
    return datetime.fromisoformat(alert["endsAt"]) > datetime.now(UTC)


@dataclass
class Outbox:
    """Alerts to deliver, kept until the receiver took them."""

    alertmanager_url: str | None
    webhook_url: str | None
    pending: list[dict[str, Any]] = field(default_factory=list)
    failures: int = 0
    next_try: float = 0.0
    sent: int = 0

    def add(self, alerts: list[dict[str, Any]]) -> None:
        self.pending.extend(alerts)

    def flush(self, now: float | None = None) -> bool:
        """Try to deliver everything pending; False (and a later retry) on failure."""
        now = time.monotonic() if now is None else now
        if not self.pending or now < self.next_try:
            return not self.pending
        batch, self.pending = self.pending, []
        try:
            if self.alertmanager_url:
                _post(f"{self.alertmanager_url.rstrip('/')}/api/v2/alerts", batch)
            if self.webhook_url:
                _post(self.webhook_url, webhook_payload(batch))
        except OSError as exc:
            self.pending = batch + self.pending
            self.failures += 1
            backoff = min(MAX_BACKOFF_S, 2.0 ** (self.failures - 1))
            self.next_try = now + backoff
            log.warning(
                "alert receiver unreachable (%s): %d alerts kept, retry in %.0f s",
                exc,
                len(self.pending),
                backoff,
            )
            return False
        self.failures, self.sent = 0, self.sent + len(batch)
        return True


def _post(url: str, body: object) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise OSError(f"{url}: HTTP {exc.code}") from exc
        # A 4xx is our payload's fault: retrying would not help; say it loudly.
        log.error("alert receiver %s refused the alerts: HTTP %d %s", url, exc.code, exc.read())
