"""Efficacy against R-Loc, one point per run on the cases every run shares, with 95 % CIs on both axes.

Shows whether an editor's locality is a better trade-off or just a weaker edit: MEMIT at several λ traces the
trade-off curve, and an editor above that curve keeps more of the subject's other facts at the same efficacy.

python experiments/frontier.py RUN_DIR... --out PNG [--y RLoc_tok_avg,RLoc_prob_avg] [--curve memit_l7]

With --curve, it also prints, for every other run, the paired difference (run − curve run, per case, seeded bootstrap
95 % CI) against the curve run of nearest ES: R-Loc compared at matched efficacy, with the ES gap left beside it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.aggregate import aggregate
from harness.metrics import METRICS
from harness.report import common_cases, load_run, markdown, metric_cells


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--y", default="RLoc_tok_avg,RLoc_prob_avg", help="one panel per metric, against ES")
    p.add_argument("--curve", help="join the runs whose folder name starts with this (e.g. a λ sweep) with a line")
    args = p.parse_args()
    ys = args.y.split(",")
    unknown = [y for y in ys if y not in {m.name for m in METRICS}]
    if unknown:
        raise SystemExit(f"error: unknown metric {', '.join(unknown)} for --y; see the columns in leaderboards/README.md")
    runs = common_cases([load_run(d) for d in args.run_dirs])

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ys), figsize=(4.5 * len(ys), 4), squeeze=False)
    for ax, y in zip(axes[0], ys):
        for r in runs:
            es, rl = r.aggregates["ES"], r.aggregates[y]
            ax.errorbar(100 * es.value, 100 * rl.value,
                        xerr=[[100 * (es.value - es.lo)], [100 * (es.hi - es.value)]],
                        yerr=[[100 * (rl.value - rl.lo)], [100 * (rl.hi - rl.value)]],
                        fmt="o", capsize=3, label=r.path.name)
        if args.curve:
            pts = sorted((100 * r.aggregates["ES"].value, 100 * r.aggregates[y].value)
                         for r in runs if r.path.name.startswith(args.curve))
            ax.plot(*zip(*pts), "--", color="grey", lw=1, zorder=0)
        ax.set_xlabel(f"ES (%), n = {len(runs[0].rows)} common edits")
        ax.set_ylabel(f"{y} (%)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    plt.close(fig)
    print(f"wrote {args.out}")
    if args.curve:
        print(matched_table(runs, args.curve, ["ES", "PS", *ys]))


def matched_table(runs: list, curve: str, names: list[str]) -> str:
    """Paired A − B on the common cases, B the curve run whose ES is nearest A's."""
    from paired_diff import diff_rows  # experiments/ is this script's folder, hence on sys.path

    line = [r for r in runs if r.path.name.startswith(curve)]
    body = []
    for a in runs:
        if a in line or not line:
            continue
        b = min(line, key=lambda r: abs(r.aggregates["ES"].value - a.aggregates["ES"].value))
        b_by_case = dict(zip(b.case_ids, b.rows))
        agg = aggregate(diff_rows(a.rows, [b_by_case[c] for c in a.case_ids]), seed=a.manifest.get("seed", 0))
        body.append([f"{a.path.name} − {b.path.name}", str(len(a.rows)), *metric_cells(agg, names)])
    return markdown(["A − B (B: nearest ES on the curve)", "n", *names], body)


if __name__ == "__main__":
    main()
