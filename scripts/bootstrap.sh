#!/usr/bin/env bash
# Sets up everything polydiff needs, from a fresh clone or an existing one; safe to run again.
#   system packages (Debian): fluidsynth + the FluidR3 GM soundfont (audio corpus and ground truth),
#     npm (installs the 3D viewer of the results page), and what POLYDIFF_EXTRA_APT names (the test
#     command adds chromium for the results-page test)
#   npm: Google's <model-viewer> into .cache/web/ (copied beside the demo page; no CDN at view time)
#   Python: the virtual environment .venv/ at the repo root, polydiff installed editable with its
#   dev extras, every version pinned by constraints.txt (the set known to work on a 2-core CPU box).
# Only the package registries are reached. Re-running with nothing changed does no network work.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

say() { printf '[polydiff setup] %s\n' "$*" >&2; }

# -- system packages ------------------------------------------------------------------------
missing=()
command -v fluidsynth >/dev/null 2>&1 || missing+=(fluidsynth)
[ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || missing+=(fluid-soundfont-gm)
command -v npm >/dev/null 2>&1 || missing+=(npm)
for pkg in ${POLYDIFF_EXTRA_APT:-}; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if command -v apt-get >/dev/null 2>&1; then
    say "installing system packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "warning: no apt-get here; install ${missing[*]} yourself (audio rendering needs them)"
  fi
fi

# -- Python environment -----------------------------------------------------------------------
py="${PYTHON:-python3}"
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "polydiff needs Python >= 3.11; set PYTHON=/path/to/python3.11 and run again" >&2
  exit 1
fi
[ -x .venv/bin/python ] || { say "creating .venv"; "$py" -m venv .venv; }

stamp=.venv/.polydiff-installed
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c 'import polydiff.core' 2>/dev/null; then
  say "installing polydiff and its pinned dependencies into .venv (first time: a few minutes)"
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
  echo "$want" > "$stamp"
fi

# -- the results page's 3D viewer (npm registry) ---------------------------------------------------
viewer_version=4.4.0
viewer=.cache/web/node_modules/@google/model-viewer
if [ "$(cat "$viewer/.polydiff-version" 2>/dev/null)" != "$viewer_version" ]; then
  if command -v npm >/dev/null 2>&1; then
    say "installing @google/model-viewer@$viewer_version into .cache/web"
    mkdir -p .cache/web
    npm install --prefix .cache/web --no-audit --no-fund --silent "@google/model-viewer@$viewer_version" >/dev/null 2>&1 \
      && echo "$viewer_version" > "$viewer/.polydiff-version" \
      || say "warning: npm install of model-viewer failed; the results page will show 3D models as images"
  fi
fi
