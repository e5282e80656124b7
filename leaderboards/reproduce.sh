#!/usr/bin/env bash
# Reproduces the committed leaderboards exactly (same build, seeds, limits and hparams).
# Usage: N=2 CF_N=3 bash leaderboards/reproduce.sh      (from the repository root, after `make setup`)
set -euo pipefail
source .venv/bin/activate
export HF_HUB_OFFLINE=1
N=${N:-2}          # edits per FINE-KED level per editor
CF_N=${CF_N:-3}    # CounterFact cases for the locate-and-edit editors and DiKE
DATA=out/fineked
RUNS=leaderboards/runs
KRD=out/krd-fineked

[ -f "$DATA/README.md" ] || fineked build --out "$DATA" --quiet
# DiKE's KRD, trained on this build's krd_train (subjects disjoint from the evaluation).
[ -f "$KRD/krd.safetensors" ] || fineked train-krd --model smollm2-135m --data "$DATA" --samples 1000 --epochs 1 \
    --con-per-batch 4 --out "$KRD" --quiet

run() {  # run DATASET_ARGS OUT EDITOR [extra...]
  local out=$1 editor=$2; shift 2
  local extra=()
  [[ $editor == dike* ]] && extra=(--set "krd_path=$KRD")
  fineked run --editor "$editor" --model smollm2-135m "$@" --out "$out" --quiet "${extra[@]}"
}

for level in easy middle hard; do
  for editor in unedited ft rome memit alphaedit rome_c memit_c dike 'dike[no_fik]' 'dike[no_tke]'; do
    run "$RUNS/fineked/$level/${editor//[\[\]]/_}" "$editor" --dataset "$DATA" --split "$level" --limit "$N"
  done
done
run "$RUNS/counterfact/unedited" unedited --dataset counterfact
run "$RUNS/counterfact/ft" ft --dataset counterfact
for editor in rome memit alphaedit dike; do
  run "$RUNS/counterfact/$editor" "$editor" --dataset counterfact --limit "$CF_N"
done

fineked leaderboard "$RUNS"/fineked/*/* --out leaderboards/fineked-smollm2-135m.csv
fineked leaderboard "$RUNS"/counterfact/* --out leaderboards/counterfact-smollm2-135m.csv
fineked report "$RUNS"/fineked/*/* --out leaderboards/plots/fineked
fineked report "$RUNS"/counterfact/* --out leaderboards/plots/counterfact
