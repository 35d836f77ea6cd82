#!/usr/bin/env bash
# Try a from-scratch snapshot as the demo world's generator (issue 25), without touching this checkout: a
# throw-away git worktree of HEAD gets the snapshot as synthface/world/assets/generator.safetensors, and the
# project's default pipeline runs on it as `make demo` and the capacity command do (label a bank, fit the latent
# model, 100 identities x 2 images per cell with the defaults), so every default that `--network world` brings
# (thresholds, nuisance regressor, per-cell coverage in the dataset card) applies to the candidate.
#
#   bash scripts/world_generator_v2/try_as_world.sh runs/world-v2/stylegan2/network-snapshot-000760.safetensors \
#       runs/world-v2/try-k760 [extra generate options, e.g. --refine-steps 15 --variation-budget 60]
#
# BANK_N (default 8000, as make demo) and IDS (default 100) change the sizes.
# Writes OUT/bank, OUT/model.synthface, OUT/cap100x2 (its README.md holds the coverage table) and OUT/time.txt.
set -euo pipefail
snap=$(realpath "${1:?give a generator snapshot (.safetensors)}")
out=$(realpath -m "${2:?give an output folder}")
shift 2
root=$(git rev-parse --show-toplevel)
py=${PYTHON:-$root/.venv/bin/python}
[[ $py = /* ]] || py=$PWD/$py  # absolute, but not resolved: a venv's python is a symlink
wt=$(mktemp -d /tmp/synthface-candidate.XXXXXX)
cleanup() { git -C "$root" worktree remove --force "$wt" >/dev/null 2>&1 || rm -rf "$wt"; }
trap cleanup EXIT
git -C "$root" worktree add --detach "$wt" HEAD >/dev/null
cp "$snap" "$wt/synthface/world/assets/generator.safetensors"
mkdir -p "$out"
cd "$wt"
# the worktree's package comes first on the path, ahead of the editable install of this checkout
export PYTHONPATH="$wt${PYTHONPATH:+:$PYTHONPATH}"
"$py" -c "import synthface, sys; sys.exit(0 if synthface.__file__.startswith('$wt') else 'wrong synthface: ' + synthface.__file__)"
start=$(date +%s)
"$py" -m synthface label --network world --n "${BANK_N:-8000}" --out "$out/bank"
"$py" -m synthface fit --bank "$out/bank" --confidence 0.95 --out "$out/model.synthface"  # make demo's fit
"$py" -m synthface generate --network world --model "$out/model.synthface" --cells all --ids-per-cell "${IDS:-100}" \
    --images-per-id 2 --out "$out/cap100x2" "$@"
echo "$(( $(date +%s) - start )) s wall for $snap" > "$out/time.txt"
echo "wrote $out/cap100x2 (coverage per cell in its README.md)"
