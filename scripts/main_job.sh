#!/usr/bin/env bash
# README command 1: set up, then the main job on its embedded default: the shipped one-step SDM
# policy (models/franka_reach_sdm) drives the simulated FR3 through the ROS 2 stack (MuJoCo bridge,
# franka_driver, policy_node as processes, started by the pip launcher) for N episodes, and prints
# the success rate, the chunk rate and the observation -> chunk latency p50/p99.
#
#   bash scripts/main_job.sh [output folder] [episodes]
#
# Writes summary.json, latency.png, episode0.png (camera view of episode 0) and nodes.log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh

OUT="${1:-outputs/main_job}"
EPISODES="${2:-20}"
source scripts/sim_env.sh 62

.venv/bin/python -m sdm_controller sim --episodes "$EPISODES" --out "$OUT"
