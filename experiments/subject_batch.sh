#!/usr/bin/env bash
# Subject-consistent batch editing (paper Fig. 4): B edits of one subject in a single update. FINE-KED has one case
# per subject, so each batch is the case plus B-1 companion edits of its held-out constraint facts (never scored).
# The bundled snapshot's subjects have at most 6 such facts in a build with --constraints 7 (a build holds at most
# half of a case's sibling facts out), so B stops at 6 here; B = 8 needs a source with more facts per subject.
# Every B runs on the same SB_N cases: the first of the split that can fill B = max(BS) (subject_batch_cases.py).
# B = 1 is the single-edit run of those cases.
# Usage (repository root, after `make setup`): SB_N=8 BS="1 2 4 6" bash experiments/subject_batch.sh
set -euo pipefail
source .venv/bin/activate
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SB_N=${SB_N:-8}
BS=${BS:-"1 2 4 6"}
EDITORS=${EDITORS:-"memit dike rome alphaedit"}
DATA=out/fineked-c7
OUT=experiments/subject_batch
BMAX=$(printf '%s\n' $BS | sort -n | tail -1)
CASES=$DATA/subject_b$BMAX.jsonl
[ -f "$DATA/README.md" ] || fineked build --constraints 7 --out "$DATA" --quiet
# The KRD of experiments/dike_vs_memit.sh: --constraints changes only which sibling facts are scored, not the subjects,
# so krd_train (and its subject split from the evaluation) is the same in both builds.
[ -f out/fineked/README.md ] || fineked build --out out/fineked --quiet
[ -f out/krd-5k/krd.safetensors ] || fineked train-krd --model smollm2-135m --data out/fineked --samples 5000 \
    --epochs 3 --con-per-batch 8 --threads 1 --quiet --out out/krd-5k
[ -f "$CASES" ] || python experiments/subject_batch_cases.py "$DATA" --split all --batch "$BMAX" --out "$CASES"
for B in $BS; do
  for editor in $EDITORS; do
    case $editor in
      memit) extra=(--set 'layers=[7]') ;;  # memit at DiKE's layer, as in experiments/dike_vs_memit.sh
      dike) extra=(--set krd_path=out/krd-5k) ;;
      *) extra=() ;;                        # rome and alphaedit at their YAML's layer 4, as on the leaderboard
    esac
    mode=(--mode subject --batch-size "$B")
    [ "$B" = 1 ] && mode=(--mode single)
    fineked run --editor "$editor" --model smollm2-135m --dataset "$CASES" --limit "$SB_N" "${mode[@]}" \
      --out "$OUT/runs/${editor}_b$B" --threads 1 --quiet "${extra[@]}"
  done
done
fineked report "$OUT"/runs/* --common-cases --out "$OUT/report" --quiet
