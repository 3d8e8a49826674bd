#!/usr/bin/env bash
# Seeds for the checkpoint target: a state.json and a SHA256SUMS as a run writes them.
set -euo pipefail
out="$1"
cat >"$out/state.json" <<'JSON'
{
  "format": 2,
  "config_name": "tiny_C32_B1_K65_7",
  "epoch": 1,
  "step_in_epoch": 3,
  "global_step": 12,
  "epoch_sums": { "loss": "12.5", "correct": "3.0", "steps": 3 },
  "interval": { "loss": "4.25", "correct": "1.0", "steps": 1 },
  "steps_csv_bytes": 512,
  "metrics_csv_bytes": 128,
  "best": [[0.25, "best/epoch-000.safetensors"]]
}
JSON
sum=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
printf '%s  model.bpk\n%s  optim.bpk\n%s  state.json\n' "$sum" "$sum" "$sum" >"$out/SHA256SUMS"
