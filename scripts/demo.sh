#!/usr/bin/env bash
# Installs (if needed) and runs the offline demo on bundled data; results land in ./demo_out.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec imgpref demo --out demo_out "$@"
