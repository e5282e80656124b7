"""`fineked endpoint | build | publish`: argument parsing only; the work lives in the modules they call."""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from common.args import number

log = logging.getLogger(__name__)


def _endpoint(args) -> int:
    from fineked.endpoint import LocalEndpoint

    with LocalEndpoint(port=args.port) as ep:
        print(f"serving the bundled WikiData snapshot at {ep.url} (read-only); Ctrl-C to stop", flush=True)
        try:
            while ep.proc is not None and ep.proc.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            print("stopped")
    return 0


def _thresholds(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("--thresholds takes two numbers, e.g. 0.2,0.35") from None
    if not lo < hi:
        raise argparse.ArgumentTypeError("--thresholds needs LOW < HIGH")
    return lo, hi


def _build(args) -> int:
    from fineked.build import BuildConfig
    from fineked.card import stats_table
    from fineked.pipeline import build_to_folder

    if args.quiet:
        import datasets

        datasets.disable_progress_bars()
    cfg = BuildConfig(max_cases=args.max_cases, seed=args.seed, embedder=args.embedder,
                      relations=tuple(args.relations.split(",")) if args.relations else None,
                      min_properties=args.min_properties, n_constraints=args.constraints,
                      krd_samples=args.krd_samples, thresholds=args.thresholds, quiet=args.quiet,
                      min_sitelinks=args.min_sitelinks)
    _, stats = build_to_folder(Path(args.out), cfg, endpoint=args.endpoint, cache=not args.no_cache,
                               timeout=args.timeout, retries=args.retries, refresh=args.refresh,
                               max_age_days=args.cache_max_age, build_date=args.build_date)
    print(stats_table(stats))
    lo, hi = stats["thresholds"]
    print(f"\nthresholds: easy < {lo:.6f} <= middle < {hi:.6f} <= hard; written to {args.out}")
    return 0


def _date(text: str) -> str:
    try:
        time.strptime(text, "%Y-%m-%d")
    except ValueError:
        raise argparse.ArgumentTypeError("--build-date takes YYYY-MM-DD, e.g. 2026-12-01") from None
    return text


def _publish(args) -> int:
    from fineked.publish import publish

    res = publish(Path(args.data), args.repo_id, private=args.private, dry_run=args.dry_run)
    print(json.dumps(res, indent=1))
    return 0


def add_parsers(sub) -> None:
    from fineked.pipeline import DEFAULT_OUT
    from fineked.similarity import DEFAULT_EMBEDDER

    p = sub.add_parser("endpoint", help="serve the bundled WikiData snapshot on 127.0.0.1 until Ctrl-C")
    p.add_argument("--port", type=number(int, 1, 65535), default=None, help="port (default: a free one)")
    p.set_defaults(func=_endpoint)

    p = sub.add_parser("build", help="build FINE-KED from a SPARQL endpoint (default: the local snapshot)")
    p.add_argument("--endpoint", default=None, help="SPARQL URL, e.g. https://query.wikidata.org/sparql (default: local)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default: %(default)s)")
    p.add_argument("--max-cases", type=number(int, 1), default=4000, help="number of edit cases (default: %(default)s)")
    p.add_argument("--seed", type=number(int, 0), default=0)
    p.add_argument("--embedder", default=DEFAULT_EMBEDDER, help="sentence-transformers model (default: embedded %(default)s)")
    p.add_argument("--relations", default=None, help="comma-separated property ids for the pool (default: all templated)")
    p.add_argument("--min-properties", type=number(int, 1), default=3, help="facts under at least this many properties per subject")
    p.add_argument("--constraints", type=number(int, 0), default=2, help="held-out constraint facts per case (default: %(default)s)")
    p.add_argument("--krd-samples", type=number(int, 0), default=20000, help="krd_train records (default: %(default)s)")
    p.add_argument("--thresholds", type=_thresholds, default=None, help="LOW,HIGH level cuts (default: tertiles)")
    p.add_argument("--min-sitelinks", type=number(int, 0), default=6,
                   help="lowest sitelink count the popularity-ordered subject sample may reach (default: %(default)s)")
    p.add_argument("--timeout", type=number(float, 0.001), default=60.0,
                   help="per-query timeout in seconds; a batch that times out is retried as two halves")
    p.add_argument("--retries", type=number(int, 1), default=5, help="tries per query on 429/503/timeouts (default: %(default)s)")
    p.add_argument("--no-cache", action="store_true", help="ignore the on-disk query cache")
    p.add_argument("--refresh", action="store_true", help="refetch every query and overwrite its cache entry")
    p.add_argument("--cache-max-age", type=number(float, 0), default=30.0,
                   help="warn when cached results older than this many days are used for a remote endpoint")
    p.add_argument("--build-date", type=_date, default=None,
                   help="date written in the dataset card (default: today, UTC); pin it for byte-identical cards")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_build)

    p = sub.add_parser("publish", help="upload a build to the Hugging Face Hub (token from HF_TOKEN or login)")
    p.add_argument("--repo-id", required=True, help="ORG/NAME")
    p.add_argument("--data", default=str(DEFAULT_OUT), help="built folder (default: %(default)s)")
    p.add_argument("--private", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="write the upload folder and check load_dataset reads it")
    p.set_defaults(func=_publish)
