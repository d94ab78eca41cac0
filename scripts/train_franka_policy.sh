#!/usr/bin/env bash
# The committed commands behind the shipped Franka reach policy (models/franka_reach_teacher and
# models/franka_reach_sdm): expert demos recorded through the ROS stack -> teacher -> SDM.
#
#   bash scripts/train_franka_policy.sh [output folder] [--install]
#
# Takes on the order of an hour on 2 CPU cores. --install copies the two artifacts into models/
# (policy.json + weights.safetensors + the curves), replacing those there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh

OUT="${1:-outputs/franka_policy}"
INSTALL="${2:-}"
source scripts/sim_env.sh 61
PY=.venv/bin/python

[[ -d "$OUT/demos.zarr" ]] || $PY -m sdm_controller collect franka-sim --out "$OUT/demos.zarr" \
    --num-demos 200 --seed 1 --hold-s 1.0
[[ -f "$OUT/teacher/policy.json" ]] || $PY -m sdm_controller train --dataset "$OUT/demos.zarr" \
    --out "$OUT/teacher" --config config/franka_teacher.yaml
[[ -f "$OUT/sdm/policy.json" ]] || $PY -m sdm_controller distill --teacher "$OUT/teacher" \
    --dataset "$OUT/demos.zarr" --out "$OUT/sdm" --method sdm --steps 300 \
    --lr-generator 1e-5 --update-ratio 2

if [[ "$INSTALL" == "--install" ]]; then
    for pair in teacher:franka_reach_teacher sdm:franka_reach_sdm; do
        src="$OUT/${pair%%:*}" dst="models/${pair##*:}"
        mkdir -p "$dst"
        cp "$src"/policy.json "$src"/weights.safetensors "$src"/*.png "$src"/*_history.json "$dst"/
        echo "installed $src -> $dst"
    done
fi
