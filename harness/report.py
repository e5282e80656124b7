"""Reports from run directories: Markdown, CSV and LaTeX tables per dataset, an R-Loc bar chart, leaderboards.

Columns come from the metric table (harness.metrics.METRICS): every metric with values in some run,
in table order, shown x100 when the metric says so; the curves and the R-Loc chart pick their metrics by
tag and level. No metric is named here.
"""
from __future__ import annotations

import csv
import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from harness import metrics as metric_table
from harness.aggregate import Aggregate, aggregate
from harness.errors import UserError
from harness.metrics import CURVE, CURVE_PLOT, Metric
from harness.rundir import RunDir

log = logging.getLogger(__name__)


@dataclass
class RunData:
    path: Path
    manifest: dict[str, Any]
    manifest_hash: str
    rows: list[dict[str, Any]]  # per-case metric dicts
    aggregates: dict[str, Aggregate]
    case_ids: list[str]

    @property
    def dataset(self) -> str:
        return self.manifest["dataset"]["name"]

    @property
    def editor(self) -> str:
        return self.manifest["editor"]

    @property
    def model(self) -> str:
        return self.manifest["model"]

    @property
    def setting(self) -> str:
        c = self.manifest["config"]
        return "single" if c["mode"] == "single" else f"{c['mode']} B={c['batch_size']}"


def load_run(path: str | Path, n_boot: int = 1000) -> RunData:
    rd = RunDir(path)
    path = rd.path
    manifest = rd.require_manifest()
    raw = rd.manifest_path.read_bytes()
    lines = rd.results()
    if not lines:
        raise UserError(f"{path} has no finished cases yet; rerun its `fineked run` command to finish it")
    rows = [ln["metrics"] for ln in lines]
    return RunData(path, manifest, hashlib.sha256(raw).hexdigest()[:12], rows,
                   aggregate(rows, n_boot=n_boot, seed=manifest.get("seed", 0)), [ln["case_id"] for ln in lines])


def common_cases(runs: Sequence[RunData]) -> list[RunData]:
    """Each run restricted to the cases every run has (same dataset), so editors are compared on the same edits."""
    datasets = {r.dataset for r in runs}
    if len(datasets) > 1:
        raise UserError(f"--common-cases compares runs on one dataset; got {', '.join(sorted(datasets))}")
    shared = set.intersection(*(set(r.case_ids) for r in runs))
    if not shared:
        raise UserError("these runs share no case; --common-cases needs runs over the same dataset")
    out = []
    for r in runs:
        keep = [i for i, c in enumerate(r.case_ids) if c in shared]
        rows = [r.rows[i] for i in keep]
        out.append(RunData(r.path, r.manifest, r.manifest_hash, rows,
                           aggregate(rows, seed=r.manifest.get("seed", 0)), [r.case_ids[i] for i in keep]))
    return out


def _scale(m: Metric, x: float) -> float:
    return 100 * x if m.percent else x


def fmt(m: Metric, a: Aggregate) -> str:
    digits = 1 if m.percent else 2
    return f"{_scale(m, a.value):.{digits}f} [{_scale(m, a.lo):.{digits}f}, {_scale(m, a.hi):.{digits}f}]"


def metric_cells(aggregates: dict[str, Aggregate], names: Sequence[str]) -> list[str]:
    """'mean [lo, hi]' for each named metric, '–' where the run has no value for it."""
    return [fmt(metric_table.by_name(n), aggregates[n]) if n in aggregates else "–" for n in names]


def columns(runs: Sequence[RunData]) -> list[Metric]:
    present = {k for r in runs for k in r.aggregates}
    return [m for m in metric_table.METRICS if m.name in present]


def table_rows(runs: Sequence[RunData]) -> tuple[list[str], list[list[str]]]:
    cols = columns(runs)
    header = ["editor", "model", "setting", "n"] + [
        f"{m.name} {'↑' if m.higher_is_better else '↓'}" for m in cols]
    body = []
    for r in sorted(runs, key=lambda r: (r.model, r.editor, r.setting)):
        body.append([r.editor, r.model, r.setting, str(len(r.rows)), *metric_cells(r.aggregates, [m.name for m in cols])])
    return header, body


def markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def latex(header: list[str], body: list[list[str]], caption: str) -> str:
    def esc(s: str) -> str:
        for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"),
                     ("↑", r"$\uparrow$"), ("↓", r"$\downarrow$"), ("–", "--")):
            s = s.replace(a, b)
        return s
    out = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{" + "l" * 3 + "r" * (len(header) - 3) + "}",
           r"\toprule", " & ".join(esc(h) for h in header) + r" \\", r"\midrule"]
    out += [" & ".join(esc(c) for c in row) + r" \\" for row in body]
    out += [r"\bottomrule", r"\end{tabular}", r"\caption{" + esc(caption) + "}", r"\end{table}"]
    return "\n".join(out) + "\n"


def csv_text(runs: Sequence[RunData], extra: Sequence[str] = ()) -> str:
    """Machine-readable rows: value, CI and case count for every metric column."""
    cols = columns(runs)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset", "editor", "model", "setting", "n_cases"] + list(extra)
               + [f"{m.name}{s}" for m in cols for s in ("", "_lo", "_hi", "_n")])
    for r in sorted(runs, key=lambda r: (r.dataset, r.model, r.editor, r.setting)):
        vals: list[Any] = []
        for m in cols:
            a = r.aggregates.get(m.name)
            vals += [round(_scale(m, a.value), 4), round(_scale(m, a.lo), 4), round(_scale(m, a.hi), 4), a.n] \
                if a else ["", "", "", 0]
        info = {"manifest_hash": r.manifest_hash, "date": r.manifest.get("created", ""),
                "command": r.manifest.get("command", ""), "git_commit": r.manifest.get("git_commit") or ""}
        w.writerow([r.dataset, r.editor, r.model, r.setting, len(r.rows)] + [info[e] for e in extra] + vals)
    return buf.getvalue()


def rloc_chart(runs: Sequence[RunData], path: Path, protocol: str = "token") -> bool:
    """Per-level R-Loc bars (with 95 % CIs) per editor x model, pooling every given run's cases."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r.editor, r.model, r.setting), []).extend(r.rows)
    bars = metric_table.rloc_levels(protocol)
    names = [m.name for m in bars]
    series = {k: aggregate(rows, metrics=bars) for k, rows in groups.items()}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(names), 3.6))
    width = 0.8 / len(series)
    for i, (key, agg) in enumerate(sorted(series.items())):
        xs, ys, err = [], [], [[], []]
        for j, n in enumerate(names):
            if n in agg:
                a = agg[n]
                xs.append(j + i * width)
                ys.append(100 * a.value)
                err[0].append(100 * (a.value - a.lo))
                err[1].append(100 * (a.hi - a.value))
        label = f"{key[0]} · {key[1]}" + ("" if key[2] == "single" else f" · {key[2]}")
        ax.bar(xs, ys, width, yerr=err, capsize=2, label=label)
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(names))])
    ax.set_xticklabels(["average" if m.level == "avg" else m.level for m in bars])
    ax.set_ylabel(f"R-Loc ({'token' if protocol == 'token' else 'probability'} protocol, %)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def curve_png(series: dict[str, list[tuple[int, dict[str, Aggregate]]]], xlabel: str, path: Path,
              integer_x: bool = False) -> None:
    """One panel per metric tagged CURVE_PLOT, one line per series of (x, aggregates) points."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [m.name for m in metric_table.tagged(CURVE_PLOT)]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.2), sharey=True)
    for ax, m in zip(axes, shown):
        for label, points in series.items():
            pts = [(x, 100 * agg[m].value) for x, agg in points if m in agg]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=label)
        ax.set_title(m)
        ax.set_xlabel(xlabel)
        if integer_x:
            ax.set_xticks(sorted({x for points in series.values() for x, _ in points}))
        ax.set_ylim(0, 105)
    axes[0].set_ylabel("%")
    axes[-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sequential_points(run: RunData) -> list[tuple[int, dict[str, Aggregate]]]:
    """(edits so far, aggregates over the cases edited so far) at each checkpoint of a sequential run and at its end."""
    points = [(int(c["n_edits"]), {k: Aggregate(**v) for k, v in c["metrics"].items()})
              for c in RunDir(run.path).checkpoints()]
    return sorted(points) + [(len(run.rows), run.aggregates)]


def sequential_curves(runs: Sequence[RunData], out: Path) -> str | None:
    """For sequential runs: a Markdown table and a PNG of efficacy and R-Loc against the number of edits."""
    seq = [r for r in runs if r.manifest["config"]["mode"] == "sequential"]
    if not seq:
        return None
    cols = [m.name for m in metric_table.tagged(CURVE)]
    header = ["editor", "dataset", "edits", *cols]
    body = [[r.editor, r.dataset, str(n), *(f"{100 * agg[m].value:.1f}" if m in agg else "-" for m in cols)]
            for r in seq for n, agg in sequential_points(r)]
    md = markdown(header, body)
    (out / "sequential.md").write_text(f"## Sequential editing\n\nMetrics over all cases edited so far (%).\n\n{md}")
    series = {f"{r.editor} · {r.dataset}": sequential_points(r) for r in seq}
    curve_png(series, "edits so far", out / "sequential.png")
    return md


def batch_size(run: RunData) -> int:
    return 1 if run.manifest["config"]["mode"] == "single" else int(run.manifest["config"]["batch_size"])


def batch_curves(runs: Sequence[RunData], out: Path) -> str | None:
    """Where an editor was run at several batch sizes (single = B 1; subject/batch modes): a Markdown table and a PNG
    of efficacy and R-Loc against B (paper Fig. 4). Pass --common-cases so every B covers the same edits."""
    by_editor: dict[str, dict[int, RunData]] = {}
    for r in runs:
        if r.manifest["config"]["mode"] != "sequential":
            by_editor.setdefault(r.editor, {})[batch_size(r)] = r
    curves = {e: dict(sorted(v.items())) for e, v in sorted(by_editor.items()) if len(v) > 1}
    if not curves:
        return None
    cols = [m.name for m in metric_table.tagged(CURVE)]
    header = ["editor", "B", "n", *cols]
    body = [[e, str(b), str(len(r.rows)), *(f"{100 * r.aggregates[m].value:.1f}" if m in r.aggregates else "-"
                                            for m in cols)]
            for e, by_b in curves.items() for b, r in by_b.items()]
    md = markdown(header, body)
    (out / "batch.md").write_text(f"## Batch size\n\nMean over the cases (%); B = edits per update.\n\n{md}")
    series = {e: [(b, r.aggregates) for b, r in by_b.items()] for e, by_b in curves.items()}
    curve_png(series, "B (edits per update)", out / "batch.png", integer_x=True)
    return md


def file_stem(name: str) -> str:
    """A file name for a dataset name read from a manifest: letters, digits, '-', '_' and inner dots only, so no
    manifest can name a path ('../../x') or a hidden file."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".") or "dataset"
    return safe if safe == name else f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def write_report(run_dirs: Sequence[str | Path], out: Path, common: bool = False) -> dict[str, str]:
    """Tables per dataset plus the R-Loc chart; returns the Markdown per dataset. common: only the cases every run
    has."""
    runs = [load_run(p) for p in run_dirs]
    if common:
        runs = common_cases(runs)
    out.mkdir(parents=True, exist_ok=True)
    by_dataset: dict[str, list[RunData]] = {}
    for r in runs:
        by_dataset.setdefault(r.dataset, []).append(r)
    md_out = {}
    for name, group in sorted(by_dataset.items()):
        header, body = table_rows(group)
        md = markdown(header, body)
        md_out[name] = md
        stem = file_stem(name)
        (out / f"{stem}.md").write_text(f"## {name}\n\nMean [bootstrap 95 % CI]; n = cases.\n\n{md}")
        (out / f"{stem}.csv").write_text(csv_text(group))
        (out / f"{stem}.tex").write_text(latex(header, body, f"{name}: mean [bootstrap 95\\% CI]"))
    for name, curve in (("sequential", sequential_curves), ("batch", batch_curves)):
        curve_md = curve(runs, out)
        if curve_md:
            md_out[name] = curve_md
    diag = diagnostics_table(runs)
    if diag:
        md_out["diagnostics"] = diag
        (out / "diagnostics.md").write_text("## Edit diagnostics\n\nPer-edit values recorded by the editors "
                                            "(results.jsonl), medians over the cases.\n\n" + diag)
    for protocol, stem in (("token", "tok"), ("prob", "prob")):
        if rloc_chart(runs, out / f"rloc_levels_{stem}.png", protocol):
            log.info("wrote %s", out / f"rloc_levels_{stem}.png")
    return md_out


DIAGNOSTICS = ("vstar_nll", "vstar_at_limit", "written_frac", "written_norm", "fik_keep", "share")


def diagnostics_table(runs: Sequence[RunData]) -> str | None:
    """Medians over each run's cases of the per-edit diagnostics editors record (results.jsonl "diagnostics"):
    the final v* NLL, the share of edits whose v* ended on the norm clamp (the median of a 0/1 flag would hide it),
    the fraction of the v* shift the update wrote (editors.locate.editor.written_diagnostics) and, for DiKE,
    ‖A⁻¹R‖/‖R‖ and the one-edit written share s. None when no run recorded any."""
    import statistics

    body = []
    for r in runs:
        wanted = set(r.case_ids)
        diags = [ln["diagnostics"] for ln in RunDir(r.path).results()
                 if ln["case_id"] in wanted and ln.get("diagnostics")]
        if not diags:
            continue
        cells = []
        for key in DIAGNOSTICS:
            vals = [float(d[key]) for d in diags if d.get(key) is not None]
            if not vals:
                cells.append("")
            elif key == "vstar_at_limit":
                cells.append(f"{100 * sum(vals) / len(vals):.0f} %")
            else:
                cells.append(f"{statistics.median(vals):.3f}")
        body.append([r.path.name, str(len(diags)), *cells])
    if not body:
        return None
    header = ["run", "n", "median v* NLL", "v* at limit", "median written_frac", "median written_norm",
              "median ‖A⁻¹R‖/‖R‖", "median s"]
    return markdown(header, body)


LEADERBOARD_EXTRA = ("manifest_hash", "date", "command", "git_commit")


def write_leaderboard(run_dirs: Sequence[str | Path], out: Path) -> int:
    """Merge runs into a leaderboard CSV, one row per (model, editor, dataset, setting); rows already in the
    file for other keys are kept, rows for the same key are replaced. Returns the number of rows."""
    runs = [load_run(p) for p in run_dirs]
    keys = [(r.model, r.editor, r.dataset, r.setting) for r in runs]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise UserError(f"several runs for {sorted(dup)[0]}; pass one run directory per (model, editor, dataset)")
    new_text = csv_text(runs, LEADERBOARD_EXTRA)
    new_rows = list(csv.DictReader(io.StringIO(new_text)))
    fields = list(csv.DictReader(io.StringIO(new_text)).fieldnames or [])
    old_rows: list[dict[str, str]] = []
    if out.exists():
        reader = csv.DictReader(io.StringIO(out.read_text()))
        old_rows = list(reader)
        fields += [f for f in reader.fieldnames or [] if f not in fields]
    key = lambda row: (row["model"], row["editor"], row["dataset"], row["setting"])  # noqa: E731
    merged = {key(r): r for r in old_rows}
    merged.update({key(r): r for r in new_rows})
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, restval="", lineterminator="\n")
    w.writeheader()
    for k in sorted(merged):
        w.writerow(merged[k])
    out.write_text(buf.getvalue())
    return len(merged)
