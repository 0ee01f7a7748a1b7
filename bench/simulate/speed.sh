#!/usr/bin/env bash
# Wall-clock speed of `duplex simulate` (issue 7's bench): Mixtral-8x7B, closed loop, (1024 in, 1024 out),
# one system per run, single-threaded. Prints a Markdown table: configuration, simulated steps, generated
# tokens, wall seconds, CPU seconds, simulated tokens per wall second, wall ms per step.
# Usage: bench/simulate/speed.sh [path/to/duplex]   (default: build/duplex)
set -euo pipefail
duplex=${1:-build/duplex}
run() {  # label, then simulate args
  local label=$1; shift
  local start end json
  start=$(date +%s.%N)
  json=$( { /usr/bin/time -f '%U %S' -o /tmp/duplex_speed_cpu "$duplex" simulate --json "$@"; } )
  end=$(date +%s.%N)
  python3 - "$label" "$start" "$end" "$json" "$(cat /tmp/duplex_speed_cpu)" <<'PY'
import json, sys
label, start, end, out, cpu = sys.argv[1:6]
r = json.loads(out)
wall = float(end) - float(start)
user, sys_ = map(float, cpu.split())
print(f"| {label} | {r['steps']} | {r['generated_tokens']} | {wall:.2f} | {user + sys_:.2f} | "
      f"{r['generated_tokens'] / wall:,.0f} | {1000 * wall / r['steps']:.3f} |")
PY
}
echo "| configuration | steps | tokens | wall s | CPU s | sim tokens / wall s | wall ms / step |"
echo "|---|---|---|---|---|---|---|"
common=(--model mixtral-8x7b --input-len 1024 --output-len 1024 --length-spread 0.1 --seed 1)
run "duplex-pe, 4 dev, 1000 req, batch 128, cycle" "${common[@]}" --system duplex-pe --requests 1000 --batch 128 --pim-model cycle
run "duplex-pe, 4 dev, 1000 req, batch 128, analytical" "${common[@]}" --system duplex-pe --requests 1000 --batch 128 --pim-model analytical
run "gpu, 4 dev, 1000 req, batch 128" "${common[@]}" --system gpu --requests 1000 --batch 128
run "duplex-pe, 4 dev, 250 req, batch 128, cycle" "${common[@]}" --system duplex-pe --requests 250 --batch 128 --pim-model cycle
run "duplex-pe, 4 dev, 500 req, batch 128, cycle" "${common[@]}" --system duplex-pe --requests 500 --batch 128 --pim-model cycle
run "duplex-pe, 4 dev, 1000 req, batch 32, cycle" "${common[@]}" --system duplex-pe --requests 1000 --batch 32 --pim-model cycle
run "duplex-pe, 4 dev, 1000 req, batch 64, cycle" "${common[@]}" --system duplex-pe --requests 1000 --batch 64 --pim-model cycle
run "duplex-pe, 8 dev, 1000 req, batch 128, cycle" "${common[@]}" --system duplex-pe --requests 1000 --batch 128 --devices 8 --pim-model cycle
run "duplex-pe, 4 dev, 1000 req, batch 128, cycle, two-batch overlap" "${common[@]}" --system duplex-pe --requests 1000 --batch 128 --pim-model cycle --set two_batch_overlap=true
