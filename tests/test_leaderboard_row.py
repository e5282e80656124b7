"""A committed leaderboard row is exactly what its stored per-case results give.

The row's mean is recomputed independently (plain Python over results.jsonl), and the whole row is
recomputed through the reporter, whose bootstrap is seeded.
"""
import csv
import json
from pathlib import Path

import pytest

from harness.report import LEADERBOARD_EXTRA, csv_text, load_run

ROOT = Path(__file__).resolve().parents[1] / "leaderboards"
BOARDS = sorted(ROOT.glob("*.csv"))


def test_both_leaderboards_are_committed():
    # Without them the parametrised test below would silently collect nothing.
    assert {b.name for b in BOARDS} >= {"fineked-smollm2-135m.csv", "counterfact-smollm2-135m.csv"}


def _run_dirs_by_hash() -> dict[str, Path]:
    # DiKE's rows reuse the committed runs of experiments/dike_vs_memit.sh
    manifests = [*(ROOT / "runs").rglob("manifest.json"), *(ROOT.parent / "experiments").rglob("manifest.json")]
    return {load_run(m.parent).manifest_hash: m.parent for m in manifests}


@pytest.mark.parametrize("board", BOARDS, ids=[b.name for b in BOARDS])
def test_every_row_recomputes_from_its_stored_cases(board):
    rows = list(csv.DictReader(board.open()))
    assert rows, f"{board} is empty"
    runs = _run_dirs_by_hash()
    for row in rows:
        run_dir = runs[row["manifest_hash"]]  # KeyError: a row whose run was not committed
        cases = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines() if line.strip()]
        assert int(row["n_cases"]) == len({c["case_id"] for c in cases}) == len(cases)
        es = [c["metrics"]["ES"] for c in cases if c["metrics"].get("ES") is not None]
        assert float(row["ES"]) == pytest.approx(100 * sum(es) / len(es), abs=1e-3)
        recomputed = next(csv.DictReader(csv_text([load_run(run_dir)], LEADERBOARD_EXTRA).splitlines()))
        assert {k: v for k, v in recomputed.items() if k in row} == {k: row[k] for k in recomputed if k in row}
