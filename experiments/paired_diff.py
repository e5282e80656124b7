"""Paired differences between runs on the same edits (A − B per case, seeded bootstrap 95 % CI over cases).

Two runs on the same cases share each case's difficulty, so the paired CI of their difference is much narrower than
the two marginal CIs suggest. Composite metrics that are means of per-level means (RLoc_*_avg) stay linear and are
recomputed inside every resample; harmonic means (Score) are not differences of means and are left out.

python experiments/paired_diff.py RUN_A RUN_B [RUN_B2 ...] [--metrics ES,RLoc_tok_avg,...]
"""
from __future__ import annotations

import argparse

from harness.aggregate import aggregate
from harness.metrics import METRICS
from harness.report import common_cases, load_run, markdown, metric_cells

DEFAULT = "ES,PS,RLoc_tok_easy,RLoc_tok_middle,RLoc_tok_hard,RLoc_tok_avg,RLoc_prob_avg"


def diff_rows(a_rows: list[dict], b_rows: list[dict]) -> list[dict]:
    """Per-case A − B of every plain-mean metric; None where either side has no value."""
    names = [m.name for m in METRICS if m.aggregation == "mean"]
    return [{k: None if a.get(k) is None or b.get(k) is None else float(a[k]) - float(b[k]) for k in names}
            for a, b in zip(a_rows, b_rows)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_a")
    p.add_argument("run_b", nargs="+")
    p.add_argument("--metrics", default=DEFAULT)
    args = p.parse_args()
    names = args.metrics.split(",")
    known = {m.name: m for m in METRICS}
    bad = [m for m in names if m not in known or known[m].aggregation == "hmean"]
    if bad:
        raise SystemExit(f"error: cannot take paired differences of {', '.join(bad)}; use plain or per-level metrics")
    runs = common_cases([load_run(d) for d in [args.run_a, *args.run_b]])
    a = runs[0]
    body = []
    for b in runs[1:]:
        b_by_case = dict(zip(b.case_ids, b.rows))
        agg = aggregate(diff_rows(a.rows, [b_by_case[c] for c in a.case_ids]), seed=a.manifest.get("seed", 0))
        body.append([f"{a.path.name} − {b.path.name}", str(len(a.rows)),
                     *metric_cells(agg, names)])
    print(markdown(["A − B", "n", *names], body))


if __name__ == "__main__":
    main()
