#!/usr/bin/env bash
# The bundled model's training set: COUNT 2D synthetic faces rendered as resumable chunks.
# A chunk folder exists only once complete (generate_folder renames it into place), so
# rerunning after an interruption renders only the missing chunks.
# Usage: tools/make_synthetic_big.sh OUT_DIR COUNT [CHUNK] [SEED] [WORKERS]
set -euo pipefail
out=${1:?usage: make_synthetic_big.sh OUT_DIR COUNT [CHUNK] [SEED] [WORKERS]}
count=${2:?usage: make_synthetic_big.sh OUT_DIR COUNT [CHUNK] [SEED] [WORKERS]}
chunk=${3:-5000}
seed=${4:-101}
workers=${5:-2}
py=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
for ((start = 0; start < count; start += chunk)); do
  n=$(( count - start < chunk ? count - start : chunk ))
  dir=$(printf '%s/part%06d' "$out" "$start")
  if [ -d "$dir" ]; then echo "have $dir"; continue; fi
  "$py" tools/make_synthetic.py --mode 2d --out "$dir" --count "$n" --start "$start" \
    --seed "$seed" --workers "$workers"
done
