#!/usr/bin/env bash
# README command 2: set everything up, then run the test suite (CPU only, no network).
#   bash scripts/test.sh [pytest args]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
POLYDIFF_EXTRA_APT="chromium ${POLYDIFF_EXTRA_APT:-}" bash "$root/scripts/bootstrap.sh"
cd "$root"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$root/.venv/bin/python" -m pytest "$@"
