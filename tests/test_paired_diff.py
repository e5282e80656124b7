"""experiments/paired_diff.py on two committed runs: its paired mean differences equal plain Python over the cases
the two runs share, each inside its own CI, and a harmonic mean is refused with a one-line error; frontier.py draws the
same runs and refuses an unknown metric the same way."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "experiments" / "dike_vs_memit" / "runs"


def _cases(run: Path) -> dict[str, dict]:
    lines = (run / "results.jsonl").read_text().splitlines()
    return {c["case_id"]: c["metrics"] for c in map(json.loads, filter(str.strip, lines))}


def _table(*args: str) -> list[list[str]]:
    out = subprocess.run([sys.executable, "experiments/paired_diff.py", *args], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return [[c.strip() for c in line.strip("|").split("|")] for line in out.strip().splitlines()[2:]]


def test_paired_differences_match_plain_python():
    a, b = RUNS / "dike", RUNS / "memit_l7_lambda6000"
    ca, cb = _cases(a), _cases(b)
    shared = sorted(set(ca) & set(cb))
    (row,) = _table(str(a), str(b), "--metrics", "ES,RLoc_tok_hard")
    assert row[0] == "dike − memit_l7_lambda6000" and int(row[1]) == len(shared)
    es = 100 * sum(ca[c]["ES"] - cb[c]["ES"] for c in shared) / len(shared)
    hard = [ca[c]["RLoc_tok_hard"] - cb[c]["RLoc_tok_hard"] for c in shared if ca[c]["RLoc_tok_hard"] is not None]
    for cell, expected in zip(row[2:], [es, 100 * sum(hard) / len(hard)]):
        mean, lo, hi = (float(x) for x in cell.replace("[", "").replace("]", "").replace(",", "").split())
        assert mean == pytest.approx(expected, abs=0.051)
        assert lo <= mean <= hi


def test_refuses_a_harmonic_mean():
    proc = subprocess.run([sys.executable, "experiments/paired_diff.py", str(RUNS / "dike"), str(RUNS / "memit_l7"),
                           "--metrics", "Score"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and "Score" in proc.stderr.strip().splitlines()[-1]


def test_frontier_plots_the_shared_edits_and_refuses_an_unknown_metric(tmp_path):
    png = tmp_path / "f.png"
    runs = [str(RUNS / n) for n in ("memit_l7", "memit_l7_lambda6000", "dike")]
    subprocess.run([sys.executable, "experiments/frontier.py", *runs, "--curve", "memit_l7", "--out", str(png)],
                   cwd=ROOT, check=True, capture_output=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    proc = subprocess.run([sys.executable, "experiments/frontier.py", *runs, "--y", "RLoc_nope", "--out", str(png)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and proc.stderr.strip() == (
        "error: unknown metric RLoc_nope for --y; see the columns in leaderboards/README.md")  # one line, no traceback
