#!/usr/bin/env bash
# Installs (if needed) and runs the whole offline test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# a local Ray in a sandbox/CI: no token auth, no usage stats (imgpref.scorers.engine_ray sets these too)
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
# Every test must run: a skip (missing Chromium, package, ...) fails the run (tests/conftest.py).
# IMGPREF_REQUIRE_ALL=0 bash scripts/test.sh lets skips pass on a machine that lacks a dependency.
export IMGPREF_REQUIRE_ALL=${IMGPREF_REQUIRE_ALL:-1}
exec python -m pytest -q -n 2 --dist loadfile "$@"
