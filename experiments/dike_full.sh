#!/usr/bin/env bash
# DKE at full strength (issue 13 §4): DiKE's row on the leaderboard's first N edits, and the frontier on the first
# NF of them: MEMIT and MEMIT-C (layer 7, DiKE's layer) at four λ, DiKE at three μ. Tuning (cases 300..) is
# experiments/dike_tune.sh; the settings below were chosen there (README, "DiKE at full strength").
# Usage (repository root): N=300 NF=100 bash experiments/dike_full.sh [dike|frontier|krd10k|ablations|rome_c|report]...
# Every run is resumable: rerun the same command after an interruption. One thread per run, so the v* memo
# (out/vstar-cache, keyed by thread count among others) is shared: MEMIT and MEMIT-C at every λ reuse one v* per edit.
set -euo pipefail
shopt -s nullglob  # a report with runs not made yet (dike_mu*) lists only those that exist
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
N=${N:-300}; NF=${NF:-100}
DATA=leaderboards/data/fineked  # the frozen build the leaderboard uses
KRD=${KRD:-experiments/krd/smollm2-135m-l7-r22}  # committed KRD (README, "The committed KRD and its premise")
KRD10K=experiments/krd/smollm2-135m-l7-r22-10k  # trained on 10,000 samples (README)
OUT=experiments/dike_full/runs
VC=(--vstar-cache out/vstar-cache)
# chosen on cases 300-319 (out/tune; README): v* lr 1.0 and 40 steps, clamp 2‖h_s‖ on the bare prompt's shift
TUNED=(--set v_lr=1.0 --set v_num_grad_steps=40 --set clamp_norm_factor=2.0)

run() {  # run NAME LIMIT EDITOR [ARGS...]
  local name=$1 limit=$2 editor=$3; shift 3
  fineked run --editor "$editor" --model smollm2-135m --dataset "$DATA" --split all --limit "$limit" \
    --out "$OUT/$name" --threads 1 --quiet "$@"
}

parts=("$@"); [ ${#parts[@]} -gt 0 ] || parts=(dike frontier report)
for part in "${parts[@]}"; do
  case $part in
    dike) run dike "$N" dike --set krd_path="$KRD" "${TUNED[@]}" "${VC[@]}" ;;
    frontier)
      for ed in memit memit_c; do  # memit first: it fills the v* memo memit_c then reads
        for lam in 1500 750 3000 375; do
          run "${ed}_l7_lam$lam" "$NF" "$ed" --set 'layers=[7]' --set "mom2_update_weight=$lam" "${VC[@]}"
        done
      done
      for mu in 0.3 3; do
        run "dike_mu$mu" "$NF" dike --set krd_path="$KRD" "${TUNED[@]}" --set "fik_weight=$mu" "${VC[@]}"
      done ;;
    krd10k)  # the 10,000-sample KRD (README, "A KRD trained on 10,000 samples") and DiKE with it at three μ
      [ -f "$KRD10K/krd.safetensors" ] || fineked train-krd --model smollm2-135m --data "$DATA" --samples 10000 \
        --epochs 1 --threads 2 --out "$KRD10K"
      for mu in 1 3 10; do
        run "dike_krd10k_mu$mu" "$NF" dike --set krd_path="$KRD10K" "${TUNED[@]}" --set "fik_weight=$mu" "${VC[@]}"
      done ;;
    rome_c) run rome_c "$N" rome_c "${VC[@]}"
            python experiments/paired_diff.py "$OUT/rome_c" leaderboards/runs/fineked/all/rome ;;
    ablations)
      for ab in no_tke no_fik; do run "dike_$ab" "$N" "dike[$ab]" --set krd_path="$KRD" "${TUNED[@]}" "${VC[@]}"; done ;;
    report)
      python experiments/frontier.py "$OUT"/memit_l7_lam* "$OUT"/memit_c_l7_lam* "$OUT"/dike "$OUT"/dike_mu* "$OUT"/dike_krd10k_mu* \
        --curve memit_l7_lam --out experiments/dike_full/frontier.png
      python experiments/paired_diff.py "$OUT/dike" "$OUT"/memit_l7_lam* ;;
    *) echo "unknown part $part (dike, frontier, krd10k, ablations, rome_c, report)" >&2; exit 2 ;;
  esac
done
