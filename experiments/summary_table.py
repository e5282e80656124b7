"""A compact Markdown table (mean [95 % CI], %) of chosen metrics from run directories, for the README.

python experiments/summary_table.py RUN_DIR... [--common-cases] [--metrics ES,PS,NS,RLoc_tok_avg]
"""
from __future__ import annotations

import argparse

from harness.report import common_cases, load_run, markdown, metric_cells

DEFAULT = "ES,PS,NS,RLoc_tok_easy,RLoc_tok_middle,RLoc_tok_hard,RLoc_tok_avg,RLoc_prob_avg"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--common-cases", action="store_true", help="only the cases every run has")
    p.add_argument("--metrics", default=DEFAULT)
    p.add_argument("--label", default="editor", help="row label: editor, or path (the run folder's name)")
    args = p.parse_args()
    runs = [load_run(d) for d in args.run_dirs]
    if args.common_cases:
        runs = common_cases(runs)
    names = args.metrics.split(",")
    header = [args.label, "n", *names]
    body = [[r.editor if args.label == "editor" else r.path.name, str(len(r.rows)),
             *metric_cells(r.aggregates, names)] for r in runs]
    print(markdown(header, body))


if __name__ == "__main__":
    main()
