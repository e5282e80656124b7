"""`fineked demo`: the whole story on the embedded defaults, by running the CLI's own subcommands.

local endpoint -> small FINE-KED build -> small KRD -> every editor on a sample of edits, each scored on all three
levels (--split all) -> leaderboard table -> R-Loc plot -> publish dry run. Flags scale it up to the full benchmark.
"""
from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path
from typing import Callable

from common.args import number
from harness.commands import add_placement_args
from harness.errors import UserError

DEMO_EDITORS = ["unedited", "ft", "rome", "memit", "alphaedit", "memit_c", "dike"]


def add_parsers(sub: argparse._SubParsersAction, run_cli: Callable[[list[str]], int]) -> None:
    """run_cli: the `fineked` entry point (harness.cli.main) that runs each step; passed in, so the demo does not
    import the CLI that imports it."""
    p = sub.add_parser("demo", help="run the whole pipeline on the embedded defaults (minutes on a laptop CPU)")
    p.add_argument("--out", default="out/demo", help="folder for every output (default: out/demo)")
    p.add_argument("--model", default="smollm2-135m")
    add_placement_args(p)
    p.add_argument("--cases", type=number(int, 0), default=2,
                   help="edits per editor, each scored on easy, middle and hard (full benchmark: 0 = all)")
    p.add_argument("--max-cases", type=number(int, 1), default=120, help="edit cases to build (full benchmark: 4000)")
    p.add_argument("--krd-samples", type=number(int, 2), default=400, help="krd_train records for the demo KRD (paper: ~20000)")
    p.add_argument("--krd-epochs", type=number(int, 0), default=1)
    p.add_argument("--krd-con-per-batch", type=number(int, 0), default=4,
                   help="rows per batch that get the live-LLM constraint loss (0: all; the demo samples to stay fast)")
    p.add_argument("--editors", default=",".join(DEMO_EDITORS), help="comma-separated editor specs")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_demo, run_cli=run_cli)


def _step(run_cli: Callable[[list[str]], int], title: str, argv: list[str]) -> None:
    print(f"\n=== {title}\n$ fineked {' '.join(argv)}", flush=True)
    started = time.monotonic()
    rc = run_cli(argv)
    if rc:
        raise UserError(f"demo step '{title}' failed (exit {rc}); fix the error above and rerun `fineked demo` "
                        "(finished steps are cached and resume)")
    print(f"--- {title}: {time.monotonic() - started:.0f} s", flush=True)


def run_demo(args: argparse.Namespace) -> int:
    from fineked.endpoint import LocalEndpoint

    out = Path(args.out)
    data, runs, krd = out / "fineked", out / "runs", out / "krd"
    quiet = ["--quiet"] if args.quiet else []
    placement = ["--dtype", args.dtype] + (["--device", args.device] if args.device else [])
    editors = [e.strip() for e in args.editors.split(",") if e.strip()]
    step = functools.partial(_step, args.run_cli)
    started = time.monotonic()

    print("=== starting the local WikiData endpoint (Oxigraph on 127.0.0.1)", flush=True)
    with LocalEndpoint() as endpoint:
        print(f"endpoint: {endpoint.url}", flush=True)
        step("build FINE-KED", ["build", "--endpoint", endpoint.url, "--out", str(data),
                                 "--max-cases", str(args.max_cases), "--krd-samples", str(args.krd_samples * 2)] + quiet)
    if any(e.startswith("dike") for e in editors):
        step("train a small KRD", ["train-krd", "--model", args.model, "--data", str(data),
                                    "--samples", str(args.krd_samples), "--epochs", str(args.krd_epochs),
                                    "--con-per-batch", str(args.krd_con_per_batch),
                                    "--out", str(krd)] + placement + quiet)
    run_dirs = []
    for spec in editors:
        run_dir = runs / spec.replace("[", "_").replace("]", "").replace(",", "_")
        argv = ["run", "--editor", spec, "--model", args.model, "--dataset", str(data), "--split", "all",
                "--out", str(run_dir)] + placement + quiet
        if args.cases:
            argv += ["--limit", str(args.cases)]
        if spec.startswith("dike"):
            argv += ["--set", f"krd_path={krd}"]
        step(f"{spec} on FINE-KED (all levels)", argv)
        run_dirs.append(str(run_dir))
    board = out / "leaderboard.csv"
    step("leaderboard", ["leaderboard", *run_dirs, "--out", str(board)] + quiet)
    step("report and R-Loc plot", ["report", *run_dirs, "--out", str(out / "report")] + quiet)
    step("publish dry run", ["publish", "--repo-id", "fineked/fineked-demo", "--data", str(data), "--dry-run"])
    print_leaderboard(board)
    print(f"\nDemo finished in {(time.monotonic() - started) / 60:.1f} min. Outputs:\n"
          f"  dataset (HF DatasetDict, parquet, card): {data}\n"
          f"  KRD checkpoint + t-SNE diagnostics:      {krd}\n"
          f"  per-case results and run manifests:      {runs}\n"
          f"  leaderboard CSV:                         {board}\n"
          f"  tables (md/csv/tex) and R-Loc plot:      {out / 'report'}\n"
          f"  publish dry-run folder:                  see the publish step above")
    return 0


def print_leaderboard(path: Path) -> None:
    import pandas as pd

    from harness.metrics import LEADERBOARD, tagged

    df = pd.read_csv(path)
    metrics = [m.name for m in tagged(LEADERBOARD) if m.name in df.columns]
    shown = df[["dataset", "editor", "n_cases", *metrics]]
    print("\n=== leaderboard (%; per-case values, CIs in the CSV)\n" + shown.to_string(index=False), flush=True)
