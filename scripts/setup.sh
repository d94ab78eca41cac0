#!/usr/bin/env bash
# Idempotent development-environment setup for sdm_controller.
#
#   bash scripts/setup.sh          # from any directory
#
# 1. system libraries needed by MuJoCo rendering (EGL/OSMesa) and RealSense (libusb), via apt when root;
# 2. a virtual environment in .venv;
# 3. torch==2.13.0 first (never an unpinned torch), then requirements-dev.txt;
# 4. removal of a stale mujoco-core 4.x split install that would shadow mujoco==3.3.0;
# 5. an editable install of this package (console scripts + `python -m sdm_controller`).
#
# pip work is skipped when .venv/.sdm_setup_stamp matches the sha256 of the requirements files, this
# script and the setuptools files, so a second run takes well under a second or two.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV=".venv"
PY="$ROOT/$VENV/bin/python"
STAMP="$VENV/.sdm_setup_stamp"
TORCH_PIN="torch==2.13.0"
MUJOCO_PIN="mujoco==3.3.0"
APT_PKGS=(libosmesa6 libegl1 libegl-mesa0 libgl1-mesa-dri libusb-1.0-0)
STAMP_INPUTS=(requirements.txt requirements-dev.txt scripts/setup.sh setup.py setup.cfg)

log() { echo "[setup] $*"; }
warn() { echo "[setup] WARNING: $*" >&2; }

pip_q() { "$PY" -m pip -q --disable-pip-version-check "$@"; }

start_s=$SECONDS

# --- (a) system packages --------------------------------------------------------------------------
missing=()
if command -v dpkg >/dev/null 2>&1; then
    for pkg in "${APT_PKGS[@]}"; do
        if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed'; then
            missing+=("$pkg")
        fi
    done
fi
if ((${#missing[@]} > 0)); then
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing system packages: ${missing[*]}"
        if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                "${missing[@]}" >/dev/null; }; then
            warn "apt-get failed; MuJoCo rendering / RealSense may not work. Missing: ${missing[*]}"
        fi
    else
        warn "missing system packages (needed for MuJoCo EGL/OSMesa rendering and RealSense):"
        warn "  sudo apt-get install -y ${missing[*]}"
        warn "continuing without them."
    fi
fi

# --- (b) virtual environment ----------------------------------------------------------------------
if [[ ! -x "$PY" ]]; then
    command -v python3 >/dev/null 2>&1 || { echo "[setup] ERROR: python3 not found" >&2; exit 1; }
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || { echo "[setup] ERROR: python3 >= 3.10 is required" >&2; exit 1; }
    log "creating $VENV"
    python3 -m venv "$VENV"
fi

stamp_hash="$(sha256sum "${STAMP_INPUTS[@]}" | sha256sum | cut -d' ' -f1)"

package_importable() {
    # Run from / so that the repository root (cwd) is not on sys.path: this checks the installed
    # editable package, which is what the console scripts use.
    (cd / && "$PY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("sdm_controller") is None)') \
        >/dev/null 2>&1
}

pip_skipped=0
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$stamp_hash" ]] && package_importable; then
    pip_skipped=1
else
    # --- (c) torch first, pinned; then the rest ------------------------------------------------------
    log "installing $TORCH_PIN"
    pip_q install "$TORCH_PIN"
    log "installing requirements-dev.txt"
    pip_q install -r requirements-dev.txt
fi

# --- (d) stale mujoco-core 4.x (cheap check, done even when pip work is skipped) ----------------------
if "$PY" - <<'EOF'
import importlib.metadata as md
import sys

try:
    md.version("mujoco-core")
except md.PackageNotFoundError:
    sys.exit(1)
sys.exit(0)
EOF
then
    log "removing stale mujoco-core and reinstalling $MUJOCO_PIN"
    pip_q uninstall -y mujoco mujoco-core mujoco-studio 2>/dev/null || true
    pip_q install "$MUJOCO_PIN"
fi

if ((pip_skipped == 0)); then
    # --- (e) editable install of this package ---------------------------------------------------------
    log "installing sdm_controller (editable)"
    pip_q install -e . --no-deps --no-build-isolation

    # Never let an unpinned torch slip in.
    torch_version="$("$PY" -c 'import importlib.metadata as md; print(md.version("torch"))')"
    if [[ "${torch_version%%+*}" != "${TORCH_PIN#torch==}" ]]; then
        echo "[setup] ERROR: torch $torch_version installed, expected $TORCH_PIN" >&2
        exit 1
    fi
    echo "$stamp_hash" >"$STAMP.tmp"
    mv "$STAMP.tmp" "$STAMP"
fi

versions="$("$PY" - <<'EOF'
import importlib.metadata as md
import platform

out = [f"python {platform.python_version()}"]
for name in ("torch", "mujoco", "rclpy"):
    try:
        out.append(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        out.append(f"{name} MISSING")
print(", ".join(out))
EOF
)"
if ((pip_skipped)); then state="up to date, pip skipped"; else state="installed"; fi
log "OK ($state) in $((SECONDS - start_s))s: $VENV with $versions"
