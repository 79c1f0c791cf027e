#!/usr/bin/env bash
# Does sysmetrics see this machine's NVIDIA GPUs as the driver does? Takes one sample with
# `sysmetrics collect --once --print` (no Kafka needed) and compares each GPU with
# `nvidia-smi`: count, name, UUID, total memory (within 2 MiB), and that utilization, memory
# used, temperature and power are read (fan speed may be null: passively cooled GPUs have none).
#
#   scripts/gpu-check.sh            # sysmetrics from PATH, else ./.venv/bin/sysmetrics
#
# Exit 0: they agree; 1: a mismatch (printed); 2: nothing to compare (no driver, no sysmetrics).
set -euo pipefail
sysmetrics=$(command -v sysmetrics || true)
[ -n "$sysmetrics" ] || sysmetrics=./.venv/bin/sysmetrics
[ -x "$sysmetrics" ] || { echo "sysmetrics not found: install it or run from the project root"; exit 2; }
command -v nvidia-smi >/dev/null || { echo "nvidia-smi not found: no NVIDIA driver on this machine"; exit 2; }
smi=$(nvidia-smi --query-gpu=index,name,uuid,memory.total --format=csv,noheader,nounits)
event=$("$sysmetrics" --log-level warning collect --once --print)
SMI="$smi" EVENT="$event" python3 - <<'PY'
import csv, io, json, os, sys

gpus = json.loads(os.environ["EVENT"].strip().splitlines()[-1])["gpus"]
smi = [[c.strip() for c in row] for row in csv.reader(io.StringIO(os.environ["SMI"])) if row]
for g in gpus:
    print(json.dumps(g))
bad = []
if len(gpus) != len(smi):
    bad.append(f"sysmetrics saw {len(gpus)} GPU(s), nvidia-smi {len(smi)}")
for g, (index, name, uuid, mem_total_mib) in zip(gpus, smi):
    if g["name"] != name:
        bad.append(f"GPU {index}: name {g['name']!r}, nvidia-smi {name!r}")
    if g["uuid"] != uuid:
        bad.append(f"GPU {index}: uuid {g['uuid']!r}, nvidia-smi {uuid!r}")
    total = g["memory_total_bytes"]
    if total is None or abs(total / 2**20 - float(mem_total_mib)) > 2:
        bad.append(f"GPU {index}: memory total {total} bytes, nvidia-smi {mem_total_mib} MiB")
    for field in ("utilization_pct", "memory_used_bytes", "temperature_celsius", "power_watts"):
        if g[field] is None:
            bad.append(f"GPU {index}: {field} is null")
print("MISMATCH:" if bad else f"OK: sysmetrics agrees with nvidia-smi on {len(smi)} GPU(s)", *bad, sep="\n  ")
sys.exit(1 if bad else 0)
PY
