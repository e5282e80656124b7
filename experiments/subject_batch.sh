#!/usr/bin/env bash
# Subject-consistent batch editing (paper Fig. 4): B edits of one subject in a single update. FINE-KED has one case
# per subject, so each batch is the case plus B-1 companion edits of its held-out constraint facts (never scored);
# the default build holds 2 per case, so B <= 3 here (`fineked build --constraints 7` for B = 8).
# B = 1 is the single-edit run of the same cases (experiments/dike_vs_memit.sh).
# Usage (repository root, after `make setup`): SB_N=8 bash experiments/subject_batch.sh
set -euo pipefail
source .venv/bin/activate
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SB_N=${SB_N:-8}
EDITORS=${EDITORS:-"memit dike rome alphaedit"}
DATA=out/fineked
OUT=experiments/subject_batch
[ -f "$DATA/README.md" ] || fineked build --out "$DATA" --quiet
for B in 2 3; do
  for editor in $EDITORS; do
    case $editor in
      memit) extra=(--set 'layers=[7]') ;;  # memit at DiKE's layer, as in experiments/dike_vs_memit.sh
      dike) extra=(--set krd_path=out/krd-5k) ;;
      *) extra=() ;;                        # rome and alphaedit at their YAML's layer 4, as on the leaderboard
    esac
    fineked run --editor "$editor" --model smollm2-135m --dataset "$DATA" --split all --limit "$SB_N" \
      --mode subject --batch-size "$B" --out "$OUT/runs/${editor}_b$B" --threads 1 --quiet "${extra[@]}"
  done
done
# B = 1: the single-edit runs of the same cases (memit and dike from experiments/dike_vs_memit.sh, rome and alphaedit
# from the leaderboard); --common-cases restricts them to these SB_N edits.
fineked report experiments/dike_vs_memit/runs/{memit_l7,dike} leaderboards/runs/fineked/all/{rome,alphaedit} "$OUT"/runs/* \
  --common-cases --out "$OUT/report" --quiet
