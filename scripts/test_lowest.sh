#!/usr/bin/env bash
# Lowest-versions job: every direct dependency at the floor pyproject.toml declares, in its own venv (.venv-lowest),
# then a fast pass through every integration (score, train, eval, reload, align one step, LoRA export + reload).
# torch/torchvision stay at the pinned build on this machine's disk (plain pip, capped by the machine's pip
# constraints); `uv --resolution lowest-direct` would ignore that build and download a CUDA torch, so the floors
# come as explicit `name==floor` constraints from scripts/lowest_constraints.py.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${IMGPREF_LOWEST_VENV:-.venv-lowest}
PY=${PYTHON:-python3}
start=$SECONDS

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1
"$VENV/bin/python" scripts/lowest_constraints.py --skip torch torchvision > "$VENV/lowest-constraints.txt"
# eager: transitive dependencies are re-resolved against the floors on every run (no leftovers of an earlier one)
"$VENV/bin/python" -m pip install -q --upgrade --upgrade-strategy eager -c "$VENV/lowest-constraints.txt" \
  -e . "pytest>=8"
"$VENV/bin/python" scripts/lowest_constraints.py --check --skip torch torchvision
echo "lowest-versions job: installed in $((SECONDS - start)) s"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
# test_lowest_smoke.py crosses every integration; test_published_presets.py checks each preset against the
# reference computed with open_clip / transformers directly (it caught pillow 10.0's different bicubic resize).
"$VENV/bin/python" -m pytest -q -p no:randomly -p no:cacheprovider \
  tests/test_lowest_smoke.py tests/scorers/test_published_presets.py
echo "lowest-versions job: done in $((SECONDS - start)) s"
