#!/usr/bin/env bash
# Sequential editing (paper §3): edits accumulate in one model, never restored; efficacy and R-Loc over all cases
# edited so far, every EVERY edits. Usage (repository root, after `make setup`): SEQ_N=20 EVERY=5 bash experiments/sequential.sh
set -euo pipefail
source .venv/bin/activate
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SEQ_N=${SEQ_N:-20}
EVERY=${EVERY:-5}
DATA=leaderboards/data/fineked  # the frozen build the committed runs used (leaderboards/data/README.md)
OUT=experiments/sequential
[ -f out/krd-5k/krd.safetensors ] || fineked train-krd --model smollm2-135m --data "$DATA" --samples 5000 --epochs 3 \
    --con-per-batch 8 --threads 1 --quiet --out out/krd-5k
for editor in memit alphaedit dike; do
  extra=()
  [ "$editor" = dike ] && extra=(--set krd_path=out/krd-5k)
  fineked run --editor "$editor" --model smollm2-135m --dataset "$DATA" --split all --limit "$SEQ_N" \
    --mode sequential --eval-every "$EVERY" --out "$OUT/runs/$editor" --threads 1 --quiet "${extra[@]}"
done
fineked report "$OUT"/runs/* --out "$OUT/report" --quiet
