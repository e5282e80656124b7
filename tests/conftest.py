"""Shared fixtures: the real local Oxigraph endpoint (one per session) and a small real build."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# A small relation pool keeps the test builds to seconds; the full build is benchmarks/bench_build.py.
TEST_RELATIONS = ("P17", "P19", "P20", "P26", "P27", "P30", "P36", "P37", "P69", "P101", "P103", "P106",
                  "P108", "P131", "P140", "P463", "P1412")


@pytest.fixture(scope="session")
def local_endpoint():
    from fineked.endpoint import LocalEndpoint

    with LocalEndpoint() as ep:
        yield ep


def small_config(**kw):
    from fineked.build import BuildConfig

    base = dict(max_cases=40, krd_samples=150, relations=TEST_RELATIONS, quiet=True, seed=0)
    base.update(kw)
    return BuildConfig(**base)


@pytest.fixture(scope="session")
def small_build(local_endpoint, tmp_path_factory):
    """A real build against the session's endpoint, with a fresh query cache, written to disk."""
    from fineked.build import build, level_split, statistics
    from fineked.card import render_card
    from fineked.export import write_dataset
    from fineked.records import LEVELS
    from fineked.sparql import SparqlClient

    root = tmp_path_factory.mktemp("build")
    client = SparqlClient(local_endpoint.url, cache=root / "qcache", cache_key="test")
    result = build(client, small_config())
    stats = statistics(result)
    info = {"endpoint": "test", "snapshot": local_endpoint.fingerprint, "results": result.results_fingerprint,
            "seed": 0, "max_cases": 40, "min_properties": 3, "embedder": "all-MiniLM-L6-v2",
            "thresholds": result.thresholds, "n_constraints": 2}
    out = root / "out"
    write_dataset(out, {lv: level_split(result.eval_records, lv) for lv in LEVELS}, result.krd_records,
                  render_card(stats, info))
    return {"result": result, "stats": stats, "out": out, "client": client}
