#!/usr/bin/env python3
"""How much of a FINE-KED build the unedited model knows: the share of edit cases whose true object it prefers.

    python benchmarks/bench_known_share.py leaderboards/data/fineked out/bench/a out/bench-scale/x50 [--model smollm2-135m]

For every edit case of each build (each case once, from the level splits), scores the true object o and the
new object o* after the edit prompt with harness.scoring (teacher-forced mean token NLL, the probability
protocol) and reports the share of cases with P(o) > P(o*) (what ES measures before any edit: its complement)
and the share whose o the model reproduces token for token (greedy argmax). Cases whose subject lies in the
synthetic tail of a stand-in (ids >= Q9000000000) are counted apart.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

from editors.models import SMOLLM2, load_model
from harness.metrics import known_fact
from harness.scoring import score_pairs
from fineked.records import LEVELS

TAIL_BASE = 9_000_000_000  # scripts/make_scale_store.py


def level_records(folder: Path, level: str) -> list[dict]:
    """A level's records from a build folder (jsonl/), or from a parquet-only export such as the frozen
    leaderboards/data/fineked (data/LEVEL.parquet)."""
    jsonl = folder / "jsonl" / f"{level}.jsonl"
    if jsonl.exists():
        return [json.loads(line) for line in jsonl.read_text().splitlines()]
    return pq.read_table(folder / "data" / f"{level}.parquet").to_pylist()


def cases(folder: Path) -> list[dict]:
    seen: dict[str, dict] = {}
    for lv in LEVELS:
        for rec in level_records(folder, lv):
            seen.setdefault(rec["case_id"], rec)
    return sorted(seen.values(), key=lambda r: r["case_id"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("builds", nargs="+", type=Path, help="built folders (fineked build --out / bench_build.py)")
    ap.add_argument("--model", default=SMOLLM2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None,
                    help="score only the first N cases by case_id (a fixed sample; for a loaded machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    print(f"| build | cases | prefers o over o* | reproduces o (argmax) | tail cases | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    for folder in args.builds:
        t0 = time.perf_counter()
        recs = cases(folder)[: args.limit]
        pairs = [(r["prompt"], r["target_true"]["str"]) for r in recs] + [(r["prompt"], r["target_new"]["str"]) for r in recs]
        scores = score_pairs(model, tok, pairs, batch_size=args.batch_size)
        true, new = scores[:len(recs)], scores[len(recs):]
        prefers = sum(t.mean_nll < n.mean_nll for t, n in zip(true, new))
        exact = sum(known_fact(t) for t in true)
        tail = sum(int(r["subject_id"][1:]) >= TAIL_BASE for r in recs)
        n = len(recs)
        print(f"| {folder} | {n:,} | {prefers:,} ({100 * prefers / n:.1f} %) | {exact:,} ({100 * exact / n:.1f} %) | "
              f"{tail:,} | {time.perf_counter() - t0:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
