#!/usr/bin/env bash
# README command 1: set up, then the main job on its embedded default.
#
# Until a trained Franka policy ships with the package, this is the offline pipeline on one MetaWorld task:
# scripted-expert demos -> teacher diffusion policy -> closed-loop evaluation (50 episodes).
#
#   bash scripts/main_job.sh [task] [output folder]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh

TASK="${1:-drawer-open}"
OUT="${2:-outputs/main_job}"
export MUJOCO_GL="${MUJOCO_GL:-egl}" PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-egl}"
PY=.venv/bin/python

$PY -m sdm_controller collect metaworld --task "$TASK" --num-demos 10 --out "$OUT/demos.zarr"
$PY -m sdm_controller train --dataset "$OUT/demos.zarr" --out "$OUT/teacher" --unet tiny --prediction sample \
    --steps 1000 --batch-size 128
$PY -m sdm_controller evaluate --artifact "$OUT/teacher" --task "$TASK" --episodes 50 \
    --sampler ddim:10 --sampler ddim:1 --json "$OUT/evaluation.json"
echo "artifact: $OUT/teacher (policy.json + weights.safetensors), curve: $OUT/teacher/training_curve.png"
