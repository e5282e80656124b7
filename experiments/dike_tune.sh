#!/usr/bin/env bash
# Tuning DiKE's layer, λ, μ and v* budget on FINE-KED cases OUTSIDE the leaderboard's first 300 (issue 13 §4):
# cases START..START+NT-1 of `--split all` (default 300..319), written to out/tune-cases.jsonl, one run per setting.
# Usage: KRD=DIR NT=20 bash experiments/dike_tune.sh 'name|--set k=v --set ...' ...
# Results: out/tune/<name>/ (fineked report out/tune/* shows ES, R-Loc and the edit diagnostics side by side).
set -euo pipefail
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
START=${START:-300}; NT=${NT:-20}; KRD=${KRD:?KRD=checkpoint folder}
DATA=${DATA:-leaderboards/data/fineked}
CASES=out/tune-cases-$START.jsonl
[ -f "$CASES" ] || python - "$DATA" "$START" "$CASES" <<'PY'
import json, sys
from harness.datasets import load_dataset
data, start, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(out, "w") as fh:
    for r in load_dataset(data, "all").records[start:start + 60]:
        fh.write(json.dumps(r.to_dict()) + "\n")
PY
for spec in "$@"; do
  name=${spec%%|*}; args=${spec#*|}
  # shellcheck disable=SC2086
  fineked run --editor dike --model smollm2-135m --dataset "$CASES" --limit "$NT" --out "out/tune/$name" \
    --threads 1 --quiet --vstar-cache out/vstar-cache --set krd_path="$KRD" $args
done
