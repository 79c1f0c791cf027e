#!/usr/bin/env bash
# System packages the tests need and Python cannot bring: Chromium for the dashboard's browser
# test, systemd's systemd-analyze to verify the collector's unit file, Prometheus' Alertmanager
# for the alert evaluator's end-to-end test, Prometheus (promtool, and a server scraping
# /metrics), node_exporter (the ingest tests' real sender) and libfaketime (steps a process's
# wall clock as NTP does, for the clock-step tests). Java 17+ and Maven (for
# the real Apache Kafka broker) are checked, not installed: the tests say how to enable that
# tier when they are missing.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-node-exporter >/dev/null 2>&1 || need+=(prometheus-node-exporter)
compgen -G "/usr/lib/*/faketime/libfaketime.so.1" >/dev/null || need+=(libfaketime)
if ((${#need[@]})); then
  if [[ $(id -u) -eq 0 ]]; then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo -n); else
    echo "warning: ${need[*]} missing and no root: the tests that need them will be skipped" >&2; exit 0; fi
  echo "installing ${need[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq >/dev/null && "${SUDO[@]}" apt-get install -y -qq "${need[@]}" >/dev/null \
    || echo "warning: could not install ${need[*]}: the tests that need them will be skipped" >&2
fi
for tool in java mvn; do
  command -v "$tool" >/dev/null 2>&1 || echo "note: $tool not found: the Apache Kafka test tier will be skipped" >&2
done
