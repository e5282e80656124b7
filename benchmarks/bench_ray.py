"""Cases per second of `fineked run --ray --workers N` (a local Ray, one CPU and one torch thread per worker) for
N = 1 and 2, against a one-process run with one thread; target: 2 workers >= 1.7x one worker on a 2-core CPU.

Each configuration is a fresh run folder on the same warm cache (statistics, prefixes and pre-edit predictions
already on disk, as after the first run of a leaderboard). Printed per configuration: wall seconds of the whole
command (Ray start and model loading included), cases/s over the whole command, and cases/s in steady state
(from the first result line to the last: the second worker's start is inside this window).

    python benchmarks/bench_ray.py [--editor rome] [--model smollm2-135m] [--cases 8] [--workers 1,2]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

from harness.cli import main as cli


def timed_run(argv: list[str], out: Path) -> tuple[float, float, int]:
    """(wall s, s from the first result line to the last, lines) of one `fineked run` (in this thread: the CLI
    installs signal handlers; a watcher thread notes when the first line lands)."""
    results = out / "results.jsonl"
    first: list[float] = []
    running = threading.Event()
    running.set()

    def watch() -> None:
        while running.is_set() and not first:
            if results.exists() and results.stat().st_size:
                first.append(time.perf_counter())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    t0 = time.perf_counter()
    watcher.start()
    try:
        rc = cli(argv + ["--out", str(out)])
    finally:
        running.clear()
        watcher.join()
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"fineked run failed: {argv}")
    n = len(results.read_text().splitlines())
    return wall, wall - (first[0] - t0 if first else 0.0), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--editor", default="rome")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dataset", default="counterfact")
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args()
    base = ["run", "--editor", args.editor, "--model", args.model, "--dataset", args.dataset, "--limit",
            str(args.cases), "--device", "cpu", "--quiet"]
    root = Path(tempfile.mkdtemp(prefix="bench_ray-"))
    print(f"{args.editor} on {args.model}, {args.cases} cases of {args.dataset}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    cli(base + ["--limit", "1", "--threads", "1", "--out", str(root / "warm")])  # fill the caches once
    rows = []
    wall, steady, n = timed_run(base + ["--threads", "1"], root / "one")
    rows.append(("one process, 1 thread", wall, n / wall, (n - 1) / steady if steady else float("nan")))
    for w in [int(x) for x in args.workers.split(",")]:
        wall, steady, n = timed_run(base + ["--ray", "--workers", str(w)], root / f"ray{w}")
        rows.append((f"--ray --workers {w}", wall, n / wall, (n - 1) / steady if steady else float("nan")))
    print(f"| {'configuration':<22} | {'wall s':>7} | {'cases/s':>7} | {'steady cases/s':>14} |")
    print(f"|{'-' * 24}|{'-' * 9}|{'-' * 9}|{'-' * 16}|")
    for name, wall, whole, steady in rows:
        print(f"| {name:<22} | {wall:7.1f} | {whole:7.3f} | {steady:14.3f} |")
    import json

    def metrics(d: Path) -> dict:
        return {ln["case_id"]: ln["metrics"] for ln in map(json.loads, (d / "results.jsonl").read_text().splitlines())}
    same = all(metrics(root / f"ray{w}") == metrics(root / "one") for w in args.workers.split(","))
    print(f"per-case metrics identical to the one-process run: {'yes' if same else 'NO'} ({root})")
    ray_rows = {r[0]: r for r in rows}
    one, two = ray_rows.get("--ray --workers 1"), ray_rows.get("--ray --workers 2")
    if one and two:
        print(f"2 workers / 1 worker: {two[2] / one[2]:.2f}x whole command, {two[3] / one[3]:.2f}x steady "
              f"(target >= 1.7x); load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
