"""R-Loc on the edits that succeeded for every given run (ES = 1 in each), so a weaker edit cannot buy locality.

python experiments/success_only.py RUN_DIR... [--metrics ...]
"""
from __future__ import annotations

import argparse

from harness.aggregate import aggregate
from harness.report import load_run, markdown, metric_cells

DEFAULT = "ES,PS,RLoc_tok_easy,RLoc_tok_middle,RLoc_tok_hard,RLoc_tok_avg,RLoc_prob_avg"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--metrics", default=DEFAULT)
    args = p.parse_args()
    runs = [load_run(d) for d in args.run_dirs]
    ok = set.intersection(*({c for c, row in zip(r.case_ids, r.rows) if row.get("ES") == 1.0} for r in runs))
    names = args.metrics.split(",")
    body = []
    for r in runs:
        rows = [row for c, row in zip(r.case_ids, r.rows) if c in ok]
        agg = aggregate(rows, seed=r.manifest.get("seed", 0))
        body.append([r.path.name, str(len(rows)),
                     *metric_cells(agg, names)])
    print(markdown(["run", "n", *names], body))


if __name__ == "__main__":
    main()
