#!/usr/bin/env bash
# Issue 14's probe table, rerun: each hostile input or race, the command, its exit status and what it printed
# (the last line of stderr, or the check's own words). Prints a Markdown table; README "Reliability" holds its output.
#   bash scripts/reliability_probes.sh            (about 5 minutes on 2 CPU cores; tiny:llama, no download)
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d /tmp/fineked-probes.XXXX)
export FINEKED_CACHE=${FINEKED_CACHE:-$W/cache} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python}
fk() { $PY -m harness.cli "$@"; }
cd "$W"
RUN=(run --model tiny:llama --dataset counterfact --quiet)
FT=(--set lr=0.05 --set norm_constraint=0.05 --set steps=5)

row() {  # row "probe" "command shown" rc "what it printed"
  printf '| %s | `%s` | %s | %s |\n' "$1" "$2" "$3" "$(echo "$4" | tr '|' '/' | cut -c1-230)"
}
probe() {  # probe "probe" "command shown" command...  (runs it, reports rc and the last stderr line)
  local name=$1 shown=$2; shift 2
  "$@" >"$W/out" 2>"$W/err"; local rc=$?
  local said; said=$(grep -E 'error|corrupt|Error' "$W/err" | tail -n 1)
  row "$name" "$shown" $rc "${said:-$(grep -v '^\s*$' "$W/err" | tail -n 1)}"
}
echo "| probe | command | rc | prints |"
echo "|---|---|---|---|"

# 1. two runs on one --out at once
fk "${RUN[@]}" --editor ft "${FT[@]}" --limit 20 --out two 2>e1 & fk "${RUN[@]}" --editor ft "${FT[@]}" --limit 20 --out two 2>e2
r2=$?; wait $!; r1=$?
row "1. two runs on one --out at once" "fineked run ... --out two & fineked run ... --out two" "$r1, $r2" \
  "$(cat e1 e2 | grep -v '^\s*$' | tail -n 1); results.jsonl: $(wc -l <two/results.jsonl) lines, $(cut -d, -f1 two/results.jsonl | sort -u | wc -l) cases"

# 2. manifest deleted, then another editor
fk "${RUN[@]}" --editor rome --set v_num_grad_steps=2 --set stats_n_samples=50 --limit 3 --out m 2>/dev/null; rm m/manifest.json
probe "2. manifest deleted, then ft into it" "rm m/manifest.json; fineked run --editor ft ... --out m" fk "${RUN[@]}" --editor ft "${FT[@]}" --limit 3 --out m

# 3. malicious resume state
$PY - "$W/krd" <<'EOF'
import os, sys, torch
class P:
    def __reduce__(self): return (os.system, (f"touch {sys.argv[1]}/PWNED",))
os.makedirs(sys.argv[1], exist_ok=True)
for n in ("resume.safetensors", "resume.pt"):
    torch.save({"state": P(), "meta": {}}, f"{sys.argv[1]}/{n}")
EOF
fk train-krd --model tiny:llama --data "$ROOT/leaderboards/data/fineked" --samples 40 --epochs 1 --warmup-epochs 0 --out krd --quiet >/dev/null 2>e3; r=$?
row "3. crafted pickle as the KRD resume state" "fineked train-krd --model tiny:llama ... --out krd" $r \
  "$(grep -c corrupt e3) warning(s) 'corrupt ... recomputing'; payload ran: $([ -e krd/PWNED ] && echo YES || echo no)"

# 4. two processes filling one pre-edit entry, 100 rounds each
cat >race.py <<'EOF'
import sys
from pathlib import Path
from editors.tiny import tiny_model_and_tokenizer
from harness.datasets import load_dataset
from harness.evaluate import load_or_compute_pre_edit
records, path = load_dataset("counterfact").records[:1], Path(sys.argv[1])
model, tok = tiny_model_and_tokenizer("gpt2")
for i in range(100):
    path.unlink(missing_ok=True)
    load_or_compute_pre_edit(model, tok, records, path)
EOF
$PY race.py pre.json 2>ra & $PY race.py pre.json 2>rb; rb=$?; wait $!; ra=$?
row "4. two processes race on one pre-edit entry (100 rounds)" "python race.py & python race.py" "$ra, $rb" \
  "$(cat ra rb | grep -c 'No such file') 'No such file' errors"

# 5. corrupt caches
fk "${RUN[@]}" --editor rome --set v_num_grad_steps=2 --set stats_n_samples=50 --limit 2 --out c0 2>/dev/null
S=$(find "$FINEKED_CACHE/stats" -name 'layer*-n50-*.safetensors' | head -n 1)
head -c 100 "$S" >"$S.x" && mv "$S.x" "$S"
probe "5a. truncated statistics entry" "head -c 100 STATS > STATS; fineked run --editor rome ..." fk "${RUN[@]}" --editor rome --set v_num_grad_steps=2 --set stats_n_samples=50 --limit 2 --out c1
$PY - "$S" <<'EOF'
import sys, torch
from common.cache import read_tensor_entry, write_tensor_entry
e = read_tensor_entry(sys.argv[1]); e["second_moment"][0, 0] = float("nan"); write_tensor_entry(sys.argv[1], e)
EOF
probe "5b. NaN statistics with a valid digest" "(NaN written into STATS) fineked run --editor rome ..." fk "${RUN[@]}" --editor rome --set v_num_grad_steps=2 --set stats_n_samples=50 --limit 2 --out c2
P=$(ls -t "$FINEKED_CACHE"/pre_edit/*.json | head -n 1)
$PY - "$P" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1])); v = next(iter(d["value"].values())); v["neigh_argmax"][0] = [t + 1 for t in v["neigh_argmax"][0]]
json.dump(d, open(sys.argv[1], "w"))
EOF
probe "5c. wrong pre-edit argmax" "(argmax +1 in the pre-edit entry) fineked run --editor rome ..." fk "${RUN[@]}" --editor rome --set v_num_grad_steps=2 --set stats_n_samples=50 --limit 2 --out c3

# 6. duplicate case ids
mk() { $PY -c "import json,sys; print(json.dumps({'case_id': $1, 'subject': 'France', 'prompt': $2, 'target_true': {'str': 'Paris'}, 'target_new': {'str': 'Rome'}}))"; }
{ mk '"c0"' '"The capital of France is"'; mk '"c0"' '"The capital of France is"'; } >dup.jsonl
{ mk 1 '"The capital of France is"'; mk '"1"' '"The capital of France is"'; } >dup1.jsonl
probe "6. case id c0 twice" "fineked run --dataset dup.jsonl ..." fk run --model tiny:llama --dataset dup.jsonl --editor ft --out d
probe "6. case ids 1 and \"1\"" "fineked run --dataset dup1.jsonl ..." fk run --model tiny:llama --dataset dup1.jsonl --editor ft --out d

# 7. --limit
probe "7. --limit 0" "fineked run ... --limit 0" fk "${RUN[@]}" --editor ft --limit 0
probe "7. --limit -1" "fineked run ... --limit -1" fk "${RUN[@]}" --editor ft --limit -1

# 8. a failed run, then the corrected rerun
fk "${RUN[@]}" --editor rome --set 'layers=[99]' --limit 2 --out f 2>e8; r=$?
probe "8. layers=[99], then the corrected rerun" "fineked run --editor rome --set layers=[99] ...; fineked run --editor rome ..." fk "${RUN[@]}" --editor rome --set v_num_grad_steps=2 --set stats_n_samples=50 --limit 2 --out f
row "8. (the failed run itself)" "fineked run --editor rome --set layers=[99] --out f" $r "$(tail -n 1 e8)"

# 9. one-line errors
printf '%s\n' "$(mk '"a"' '"The capital of France is"')" '{"case_id": "b", "subj' >bad.jsonl
probe "9. malformed JSON line" "fineked run --dataset bad.jsonl ..." fk run --model tiny:llama --dataset bad.jsonl --editor ft --out b
{ mk '"a"' '"The capital of France is"'; printf '{"case_id": "b\xff"}\n'; } >nonutf8.jsonl
probe "9. non-UTF-8 byte" "fineked run --dataset nonutf8.jsonl ..." fk run --model tiny:llama --dataset nonutf8.jsonl --editor ft --out b
mk '"big"' '"The capital of France is " + "very " * 200000' >big.jsonl
probe "9. 1 MB prompt" "fineked run --dataset big.jsonl ..." fk run --model tiny:llama --dataset big.jsonl --editor ft --out b
probe "9. --set v_lr=abc" "fineked run --editor rome --set v_lr=abc" fk "${RUN[@]}" --editor rome --set v_lr=abc
probe "9. --set layers=[1," "fineked run --editor rome --set 'layers=[1,'" fk "${RUN[@]}" --editor rome --set 'layers=[1,'
probe "9. --set v_num_grad_steps=-5" "fineked run --editor rome --set v_num_grad_steps=-5" fk "${RUN[@]}" --editor rome --set v_num_grad_steps=-5
probe "9. missing stats_corpus file" "fineked run --editor rome --set stats_corpus=nope.txt --limit 1" fk "${RUN[@]}" --editor rome --set stats_corpus=nope.txt --limit 1 --out sc
probe "9. --score-batch-size 0" "fineked run ... --score-batch-size 0" fk "${RUN[@]}" --editor ft --score-batch-size 0
probe "9. --threads -2" "fineked run ... --threads -2" fk "${RUN[@]}" --editor ft --threads -2
probe "9. --fluency-tokens -2" "fineked run ... --fluency-tokens -2" fk "${RUN[@]}" --editor ft --fluency-tokens -2
touch afile
probe "9. --out naming a file" "fineked run ... --out afile" fk "${RUN[@]}" --editor ft --out afile
probe "9. endpoint URL without a scheme" "fineked build --endpoint query.wikidata.org/sparql" fk build --endpoint query.wikidata.org/sparql --out bld --quiet
cat >srv.py <<'EOF'
import http.server, json, sys, threading
from fineked.sparql import SparqlClient, SparqlError
class H(http.server.BaseHTTPRequestHandler):
    n = 0
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0)); H.n += 1
        if sys.argv[1] == "soon" and H.n == 1:
            self.send_response(429); self.send_header("Retry-After", "soon"); self.send_header("Content-Length", "0"); self.end_headers(); return
        body = json.dumps({"results": {}} if sys.argv[1] == "empty" else {"head": {}, "results": {"bindings": []}}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/sparql-results+json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H); threading.Thread(target=s.serve_forever, daemon=True).start()
try:
    rows = SparqlClient(f"http://127.0.0.1:{s.server_port}/q", cache=None, backoff=0.01, retries=2).select("probe", "SELECT * {}")
    print(f"answered after {H.n} requests: {rows}", file=sys.stderr)
except SparqlError as e:
    print(f"SparqlError: {e}", file=sys.stderr); sys.exit(2)
EOF
probe "9. a result with results:{}" "SparqlClient(...).select() against a server answering {\"results\":{}}" $PY srv.py empty
probe "9. Retry-After: soon" "SparqlClient(...).select() against a server answering 429, Retry-After: soon" $PY srv.py soon
cp -r "$ROOT/leaderboards/data/fineked" net  # publish stages next to --data: never inside the checkout
probe "9. publish with the network down" "HF_ENDPOINT=http://127.0.0.1:9 fineked publish --repo-id org/x --data net" \
  env HF_HUB_OFFLINE=0 HF_ENDPOINT=http://127.0.0.1:9 HF_TOKEN=hf_dummy $PY -m harness.cli publish --repo-id org/x --data net
fk "${RUN[@]}" --editor ft "${FT[@]}" --limit 3 --out cm 2>/dev/null; cp -r cm tm
$PY -c "import sys; p='cm/results.jsonl'; L=open(p).read().splitlines(); L[1]=L[1][:30]; open(p,'w').write('\n'.join(L)+'\n')"
probe "9. corrupt middle line in a run folder" "fineked report cm" fk report cm --out rep
head -c 40 tm/manifest.json >tm/m && mv tm/m tm/manifest.json
probe "9. truncated manifest" "fineked report tm" fk report tm --out rep

# 10. --split where it does not apply
probe "10. --split with CounterFact" "fineked run --dataset counterfact --split easy" fk "${RUN[@]}" --editor ft --split easy
probe "10. --split with a .jsonl" "fineked run --dataset dup.jsonl --split hard" fk run --model tiny:llama --dataset dup.jsonl --split hard --editor ft

# 11. path traversal from a manifest
fk "${RUN[@]}" --editor ft "${FT[@]}" --limit 2 --out runs/pt 2>/dev/null
$PY -c "import json; p='runs/pt/manifest.json'; m=json.load(open(p)); m['dataset']['name']='../../pwned_report'; json.dump(m, open(p,'w'))"
fk report runs/pt --out deep/er/rep >/dev/null 2>&1; r=$?
row "11. manifest naming ../../pwned_report" "fineked report runs/pt --out deep/er/rep" $r \
  "files outside deep/er/rep: $(find . -name 'pwned_report*' -not -path './deep/er/rep/*' | wc -l); inside: $(ls deep/er/rep | grep pwned | head -n 1)"

# lower-severity risks
for sig in TERM KILL; do
  $PY -m harness.cli endpoint >ep.out 2>/dev/null & EP=$!
  for _ in $(seq 300); do grep -q serving ep.out 2>/dev/null && break; sleep 0.1; done
  OX=$(pgrep -P $EP oxigraph); kill -$sig $EP; wait $EP 2>/dev/null; sleep 2
  row "SIGTERM/SIGKILL to fineked endpoint" "kill -$sig <fineked endpoint>" - \
    "oxigraph (pid $OX) still running: $(kill -0 $OX 2>/dev/null && echo YES || echo no)"
done
cp -r c0 live; printf '{"case_id": "x", "metr' >>live/results.jsonl; before=$(sha256sum <live/results.jsonl)
fk report live --out rep >/dev/null 2>&1; r=$?
row "report on a run with a torn last line" "fineked report live" $r "results.jsonl rewritten: $([ "$before" = "$(sha256sum <live/results.jsonl)" ] && echo no || echo YES)"
cp -r "$ROOT/leaderboards/data/fineked" part && rm part/README.md part/krd_train/train.parquet
probe "a partly written build" "fineked run --dataset part --split easy" fk run --model tiny:llama --dataset part --split easy --editor ft --out pb
cp -r "$ROOT/leaderboards/data/fineked" fk && mkdir -p fk-upload && echo keep >fk-upload/precious.txt
probe "publish --dry-run onto a folder it did not stage" "fineked publish --dry-run --repo-id org/x --data fk (fk-upload exists)" \
  fk publish --dry-run --repo-id org/x --data fk
row "(the folder afterwards)" "cat fk-upload/precious.txt" - "$(cat fk-upload/precious.txt)"
$PY -c "import json; print(json.dumps({'case_id': 'n', 'subject': 'France', 'prompt': 'The capital of France is', 'target_true': {'str': 'Paris'}, 'target_new': {'str': 'Rome'}, 'fine_grained': [{'relation_id': 'P1', 'prompt': 'France is in', 'target': {'str': 'Europe'}, 'similarity': float('nan'), 'level': 'easy'}]}))" >nan.jsonl
probe "a NaN similarity" "fineked run --dataset nan.jsonl ..." fk run --model tiny:llama --dataset nan.jsonl --editor ft --out n
fk "${RUN[@]}" --editor rome --set v_num_grad_steps=2 --set stats_n_samples=40 --limit 1 --out q 2>eq; r=$?
row "--quiet" "fineked run --editor rome ... --quiet (statistics computed)" $r "progress-bar lines on stderr: $(grep -c 'it/s\|batch/s' eq)"
rm -rf "$W"
