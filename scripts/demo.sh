#!/usr/bin/env bash
# README command 1: set everything up, then run the main job (`polydiff demo`).
#   bash scripts/demo.sh [OUTDIR]        (default OUTDIR: demo_out/)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
exec "$root/.venv/bin/polydiff" demo -o "${1:-$root/demo_out}"
