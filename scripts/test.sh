#!/usr/bin/env bash
# README test command: sets up the environment (idempotent, fast when up to date) and runs the tests.
#
#   bash scripts/test.sh [extra pytest args...]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh

# Keep ROS 2 traffic on this host and in a private domain; headless MuJoCo rendering.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=73
export MUJOCO_GL=egl
export PYOPENGL_PLATFORM=egl
export OMP_NUM_THREADS=2

rc=0
.venv/bin/python -m pytest -q tests "$@" || rc=$?
if ((rc == 5)); then
    echo "[test] ERROR: pytest collected no tests (exit code 5); treating this as a failure." >&2
    exit 1
fi
exit "$rc"
