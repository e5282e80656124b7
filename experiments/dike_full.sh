#!/usr/bin/env bash
# DKE at full strength (issue 13): DiKE with the new defaults on the leaderboard's edits, ROME-C with its new
# preserved-key weight, and the tuning runs on cases outside those edits.
# Usage (repository root): N=300 bash experiments/dike_full.sh    (resumable; a larger N extends the runs)
# KRD: experiments/dike_full/krd/ is the stand-in KRD these runs used (3,000 krd_train samples, best weights after
# the first of two epochs of `fineked train-krd --samples 3000 --epochs 2 --con-per-batch 8`; its krd.json says so).
set -euo pipefail
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
N=${N:-300}
DATA=leaderboards/data/fineked
KRD=${KRD:-experiments/dike_full/krd}
VC=(--vstar-cache out/vstar-cache)
KRD=$KRD NT=${NT:-8} bash experiments/dike_tune.sh 'default|'   # tuning: cases 300.. (out/tune/default)
fineked run --editor dike --model smollm2-135m --dataset "$DATA" --split all --limit "$N" \
  --out experiments/dike_full/runs/dike --threads 1 --quiet "${VC[@]}" --set krd_path="$KRD"
fineked run --editor rome_c --model smollm2-135m --dataset "$DATA" --split all --limit "$N" \
  --out experiments/dike_full/runs/rome_c --threads 1 --quiet "${VC[@]}"
python experiments/paired_diff.py experiments/dike_full/runs/rome_c leaderboards/runs/fineked/all/rome
python experiments/paired_diff.py experiments/dike_full/runs/dike experiments/dike_vs_memit/runs/{memit_l7,dike}
python experiments/preserve_weight.py --data "$DATA" --start 300 --n 30
