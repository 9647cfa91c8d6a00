#!/usr/bin/env bash
# Installs everything imgpref needs on a fresh machine into ./.venv (idempotent; re-running is cheap).
# Pins live here (the dev/CI path); pyproject.toml only declares ranges.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  # Headless Chromium renders the HTML report in the browser test (Debian packages).
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  if command -v apt-get >/dev/null 2>&1; then
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null \
      || echo "warning: could not install chromium; the browser test fails under scripts/test.sh (IMGPREF_REQUIRE_ALL=0 skips it)" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first, pinned to the build that lies on this machine's disk (CPU use; CUDA build)
python -m pip install -q torch==2.14.1 torchvision==0.29.1
python -m pip install -q -e ".[dev,ray]"  # ray: the Ray engine of `imgpref score` is tested in CI
