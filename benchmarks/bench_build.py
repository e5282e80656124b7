#!/usr/bin/env python3
"""Benchmark the full FINE-KED build on the bundled snapshot: wall time per stage, SPARQL queries, rows/s.

    python benchmarks/bench_build.py [--max-cases 4000] [--out out/bench] [--no-second-build]

Starts from an empty query cache so every query goes to the local Oxigraph; then (by default) builds a
second time with another empty cache and reports whether the parquet files are byte-identical.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import tempfile
import time
from pathlib import Path

from fineked.build import BuildConfig
from fineked.card import stats_table
from fineked.pipeline import build_to_folder


def parquet_digests(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.glob("**/*.parquet")) if "hf" not in p.parts}


def one_build(out: Path, cfg: BuildConfig):
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        result, stats = build_to_folder(out, cfg, cache=Path(cache) / "sparql")
        total = time.perf_counter() - t0
    return result, stats, total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-cases", type=int, default=4000)
    ap.add_argument("--krd-samples", type=int, default=20000)
    ap.add_argument("--out", type=Path, default=Path("out/bench"))
    ap.add_argument("--no-second-build", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import datasets

    datasets.disable_progress_bars()
    cfg = BuildConfig(max_cases=args.max_cases, krd_samples=args.krd_samples, quiet=True)
    result, stats, total = one_build(args.out / "a", cfg)

    print("| stage | wall s | SPARQL queries | result rows | rows/s | produced |")
    print("|---|---:|---:|---:|---:|---:|")
    for s in result.stages:
        rate = f"{s.rows / s.seconds:,.0f}" if s.rows and s.seconds > 0 else "-"
        print(f"| {s.name} | {s.seconds:.2f} | {s.queries} | {s.rows:,} | {rate} | {s.items:,} |")
    staged = sum(s.seconds for s in result.stages)
    print(f"| write parquet/JSONL/save_to_disk/card + endpoint start | {total - staged:.2f} | 0 | - | - | - |")
    q = sum(s.queries for s in result.stages)
    rows = sum(s.rows for s in result.stages)
    print(f"| **total** | {total:.2f} | {q} | {rows:,} | {rows / total:,.0f} | - |")
    fact_stages = [s for s in result.stages if "subject facts" in s.name]
    n_subj = len({r['subject_id'] for r in result.eval_records + result.krd_records})
    n_q = sum(s.queries for s in fact_stages)
    print(f"\nsubject facts: {n_q} VALUES queries for >= {n_subj:,} subjects used "
          f"({n_subj / max(1, n_q):.0f} subjects per query)\n")
    print(stats_table(stats))
    print(f"\nthresholds: {stats['thresholds']}")
    if not args.no_second_build:
        _, _, total2 = one_build(args.out / "b", cfg)
        da, db = parquet_digests(args.out / "a"), parquet_digests(args.out / "b")
        same = da == db and len(da) == 4
        print(f"\nsecond build ({total2:.1f} s, fresh cache): parquet byte-identical: {same}")
        for k, v in da.items():
            print(f"  {k}: sha256 {v[:16]}")
        return 0 if same else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
