#!/usr/bin/env python3
"""Benchmark the FINE-KED build: on the bundled snapshot (twice, byte-identity) or on WikiData-scale stand-ins.

    python benchmarks/bench_build.py [--max-cases 4000] [--out out/bench] [--no-second-build]
    python benchmarks/bench_build.py --store-scale 1,10,50 [--out out/bench-scale]

Bundled snapshot: builds from an empty query cache, then builds a second time with another empty cache and
compares every file of the two output folders (sha256), so it says exactly which files are byte-identical.

--store-scale K,...: for each K, writes the stand-in with scripts/make_scale_store.py (once; kept under
out/scale/), loads it into Oxigraph (once; kept in the cache), serves it on 127.0.0.1 with --timeout-s 60
(WDQS's limit), builds --max-cases cases with no query cache, and prints per store: query time per stage,
the slowest single query, cases, relations, facts and mean similarity per level, and the share of cases
whose subject is a real snapshot subject (the popular head) rather than a synthetic tail item. Each build
is written to OUT/xK for benchmarks/bench_known_share.py.

--compare-scales 1,10,50: on a shared machine the load changes between builds, so this serves all the stand-ins
at once, builds on the first, and sends each query to every store in rotating order: the same workload, timed
under the same load.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fineked.build import BuildConfig, build
from fineked.card import stats_table
from fineked.endpoint import LocalEndpoint, store_for
from fineked.paths import file_sha256
from fineked.pipeline import build_to_folder, write_build
from fineked.records import LEVELS
from fineked.sparql import SparqlClient, SparqlTimeout

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import make_scale_store  # noqa: E402  (a script, not a package)

TIMEOUT_S = 60  # WDQS stops every query at 60 s
FIXED_DATE = "2026-01-01"  # pinned build date: the card is then byte-identical too


def folder_digests(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


def one_build(out: Path, cfg: BuildConfig):
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        result, stats = build_to_folder(out, cfg, cache=Path(cache) / "sparql", build_date=FIXED_DATE)
        total = time.perf_counter() - t0
    return result, stats, total


def stage_table(result, total: float | None = None) -> None:
    print("| stage | wall s | query s | SPARQL queries | slowest query s | result rows | produced |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for s in result.stages:
        print(f"| {s.name} | {s.seconds:.2f} | {s.query_seconds:.2f} | {s.queries} | {s.slowest:.2f} | {s.rows:,} | {s.items:,} |")
    q = sum(s.queries for s in result.stages)
    qs = sum(s.query_seconds for s in result.stages)
    if total is not None:
        staged = sum(s.seconds for s in result.stages)
        print(f"| write parquet/JSONL/save_to_disk/card + endpoint start | {total - staged:.2f} | 0 | 0 | - | - | - |")
        print(f"| **total** | {total:.2f} | {qs:.2f} | {q} | {max(s.slowest for s in result.stages):.2f} | "
              f"{sum(s.rows for s in result.stages):,} | - |")


def bundled(args) -> int:
    cfg = BuildConfig(max_cases=args.max_cases, krd_samples=args.krd_samples, quiet=True)
    result, stats, total = one_build(args.out / "a", cfg)
    stage_table(result, total)
    print()
    print(stats_table(stats))
    print(f"\nthresholds: {stats['thresholds']}; sampling: {json.dumps(result.sampling)}")
    if args.no_second_build:
        return 0
    _, _, total2 = one_build(args.out / "b", cfg)
    da, db = folder_digests(args.out / "a"), folder_digests(args.out / "b")
    same = sorted(k for k in da if db.get(k) == da[k])
    differ = sorted(k for k in set(da) | set(db) if da.get(k) != db.get(k))
    print(f"\nsecond build ({total2:.1f} s, fresh cache, same --build-date): {len(same)} files byte-identical, "
          f"{len(differ)} differ")
    for k in same:
        if not k.startswith("hf/"):
            print(f"  identical  {k}: sha256 {da[k][:16]}")
    print(f"  identical  hf/**: {sum(k.startswith('hf/') for k in same)} files")
    for k in differ:
        print(f"  DIFFERENT  {k}")
    core = [k for k in da if k.endswith((".parquet", ".jsonl")) or k == "README.md"]
    return 0 if all(k in same for k in core) else 1


def ensure_store_file(k: int, scale_dir: Path) -> tuple[Path, dict]:
    nt = scale_dir / f"wikidata-x{k}.nt"
    meta = nt.with_suffix(".json")
    if nt.exists() and meta.exists():
        return nt, json.loads(meta.read_text())
    if nt.exists():  # written by hand with make_scale_store.py: count it
        lines = int(subprocess.run(["wc", "-l", str(nt)], capture_output=True, text=True).stdout.split()[0])
        info = {"path": str(nt), "triples": lines, "tail_items": None, "bytes": nt.stat().st_size, "seconds": None}
        return nt, info
    print(f"writing the {k}x stand-in to {nt} ...", file=sys.stderr, flush=True)
    info = make_scale_store.write_store(nt, k)
    meta.write_text(json.dumps(info, indent=1))
    return nt, info


def scaled(args) -> int:
    rows = []
    for k in [int(x) for x in args.store_scale.split(",")]:
        nt, info = ensure_store_file(k, args.scale_dir)
        t0 = time.perf_counter()
        store_for(nt, lenient=True)
        load_s = time.perf_counter() - t0
        store_bytes = int(subprocess.run(["du", "-sb", str(store_for(nt, lenient=True))], capture_output=True,
                                         text=True).stdout.split()[0])
        cfg = BuildConfig(max_cases=args.max_cases, krd_samples=args.krd_samples, quiet=True)
        with LocalEndpoint(snapshot=nt, timeout_s=TIMEOUT_S, lenient=True) as ep:
            client = SparqlClient(ep.url, cache=None, timeout=TIMEOUT_S + 5)
            t0 = time.perf_counter()
            result = build(client, cfg)
            wall = time.perf_counter() - t0
        stats = write_build(args.out / f"x{k}", result, cfg, f"local Oxigraph serving {nt.name} (--timeout-s 60)",
                            "sha256:" + file_sha256(nt), FIXED_DATE)
        slow = max(client.timings, key=lambda t: t.seconds)
        head = sum(int(r["subject_id"][1:]) < make_scale_store.TAIL_BASE for r in result.eval_records)
        print(f"\n## {k}x: {info['triples']:,} triples ({info['tail_items']} tail items); generated in "
              f"{info['seconds']} s, {info['bytes'] / 1e9:.2f} GB; Oxigraph load {load_s:.0f} s "
              f"(0 = already loaded), store {store_bytes / 1e9:.2f} GB; build {wall:.1f} s")
        stage_table(result)
        print(f"\nslowest single query: {slow.name} {slow.seconds:.2f} s ({slow.rows:,} rows); "
              f"splits (bands by count, batches by timeout): {dict(client.splits)}; "
              f"cases from the head: {head}/{len(result.eval_records)}")
        print(stats_table(stats))
        rows.append({"k": k, "triples": info["triples"], "query_s": sum(t.seconds for t in client.timings),
                     "queries": len(client.timings), "slowest": f"{slow.name} {slow.seconds:.2f}",
                     "stage_q": {s.name.split(" ", 1)[0]: s.query_seconds for s in result.stages if s.queries},
                     "build_s": wall, "cases": stats["cases"], "relations": stats["relations"],
                     "facts": [stats["levels"][lv]["facts"] for lv in LEVELS],
                     "sims": [stats["levels"][lv]["mean_similarity"] for lv in LEVELS],
                     "head": head / max(1, len(result.eval_records)),
                     "links_median": result.sampling.get("case_sitelinks_median")})
    print("\n## summary\n")
    print("| store | triples | query s (stages 1/2/3/4) | queries | slowest query s | build s | cases | relations "
          "| facts easy/middle/hard | mean sim easy/middle/hard | cases from head | case sitelinks median |")
    print("|---|---:|---|---:|---|---:|---:|---:|---|---|---:|---:|")
    for r in rows:
        st = " / ".join(f"{v:.1f}" for v in r["stage_q"].values())
        print(f"| {r['k']}x | {r['triples']:,} | {r['query_s']:.1f} ({st}) | {r['queries']} | {r['slowest']} | "
              f"{r['build_s']:.0f} | {r['cases']:,} | {r['relations']} | {'/'.join(f'{x:,}' for x in r['facts'])} | "
              f"{'/'.join(f'{x:.3f}' for x in r['sims'])} | {100 * r['head']:.1f} % | {r['links_median']} |")
    if len(rows) > 1:
        print(f"\ntotal query time {rows[-1]['k']}x / {rows[0]['k']}x: {rows[-1]['query_s'] / rows[0]['query_s']:.2f}")
    return 0


class TeeClient(SparqlClient):
    """Runs the build on the first endpoint and sends every query to the others too, rotating the order, so all
    stores answer the same workload under the same machine load (a fair comparison on a shared machine)."""

    def __init__(self, urls: list[str], **kw):
        super().__init__(urls[0], **kw)
        self.others = [SparqlClient(u, cache=None, timeout=self.timeout, retries=self.retries) for u in urls[1:]]
        self.per_store: list[list[tuple[str, float]]] = [[] for _ in urls]
        self.timeouts = 0

    def _fetch(self, name: str, query: str) -> dict:
        order = list(range(len(self.per_store)))
        turn = sum(len(x) for x in self.per_store) // len(order)
        order = order[turn % len(order):] + order[:turn % len(order)]
        result = None
        for i in order:
            t0 = time.perf_counter()
            if i == 0:
                result = super()._fetch(name, query)
            else:
                try:
                    self.others[i - 1]._fetch(name, query)
                except SparqlTimeout:
                    self.timeouts += 1  # counted; its time (up to the limit) stays in the total
            self.per_store[i].append((name, time.perf_counter() - t0))
        return result


def compare(args) -> int:
    ks = [int(x) for x in args.compare_scales.split(",")]
    files = [ensure_store_file(k, args.scale_dir)[0] for k in ks]
    cfg = BuildConfig(max_cases=args.max_cases, krd_samples=args.krd_samples, quiet=True)
    eps = [LocalEndpoint(snapshot=f, timeout_s=TIMEOUT_S, lenient=True) for f in files]
    try:
        for ep in eps:
            ep.start()
        client = TeeClient([ep.url for ep in eps], cache=None, timeout=TIMEOUT_S + 5)
        result = build(client, cfg)
    finally:
        for ep in eps:
            ep.stop()
    names = sorted({n for n, _ in client.per_store[0]})
    print(f"the {ks[0]}x build's {len(client.per_store[0])} queries, each sent to every store in rotating order "
          f"({len(result.eval_records)} cases)\n")
    print("| store | total query s | " + " | ".join(f"{n} s" for n in names) + " | slowest query s |")
    print("|---|---:|" + "---:|" * len(names) + "---:|")
    totals = []
    for k, times in zip(ks, client.per_store):
        totals.append(sum(t for _, t in times))
        by = {n: sum(t for m, t in times if m == n) for n in names}
        slow = max(times, key=lambda x: x[1])
        print(f"| {k}x | {totals[-1]:.1f} | " + " | ".join(f"{by[n]:.1f}" for n in names) + f" | {slow[0]} {slow[1]:.2f} |")
    print(f"\ntotal query time {ks[-1]}x / {ks[0]}x on the same queries: {totals[-1] / totals[0]:.2f}; "
          f"timeouts on the other stores: {client.timeouts}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-cases", type=int, default=4000)
    ap.add_argument("--krd-samples", type=int, default=20000)
    ap.add_argument("--out", type=Path, default=None, help="default: out/bench (snapshot) or out/bench-scale")
    ap.add_argument("--no-second-build", action="store_true")
    ap.add_argument("--store-scale", default=None, help="comma-separated K: build from K x stand-ins instead")
    ap.add_argument("--scale-dir", type=Path, default=Path("out/scale"), help="where the stand-ins are written")
    ap.add_argument("--compare-scales", default=None,
                    help="K1,K2,...: build on the K1 stand-in and time every query on all of them in rotation")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import datasets

    datasets.disable_progress_bars()
    if args.compare_scales:
        return compare(args)
    if args.store_scale:
        args.out = args.out or Path("out/bench-scale")
        return scaled(args)
    args.out = args.out or Path("out/bench")
    return bundled(args)


if __name__ == "__main__":
    sys.exit(main())
