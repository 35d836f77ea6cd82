#!/usr/bin/env bash
# Assess one snapshot of the from-scratch demo generator (issue 25) the way docs/benchmarks.md quotes it:
# confidently labelled fraction and cell frequencies (2,000 seeds), then each cell's prior coverage against
# renderer people in the audit recogniser's and the audit attribute net's spaces (about 2.5 min on 2 cores).
#
#   bash scripts/world_generator_v2/assess.sh runs/world-v2/stylegan2/network-snapshot-000200.safetensors k200
set -euo pipefail
snap=${1:?give a generator snapshot (.safetensors)}
name=${2:?give a name for the results folder, e.g. k200}
out=${3:-runs/world-v2/assess}/$name
py=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
"$py" -m synthface world assess --network "$snap" --outdir "$out/world" > "$out/assessment.json"
"$py" scripts/measure_generator_coverage.py --network "$snap" --n 150 --prior-pool 60 --skip-latent \
    --out "$out/coverage.json"
echo "wrote $out/assessment.json and $out/coverage.json"
