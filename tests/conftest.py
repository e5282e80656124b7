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
    from fineked.build import build
    from fineked.pipeline import write_build
    from fineked.sparql import SparqlClient

    root = tmp_path_factory.mktemp("build")
    client = SparqlClient(local_endpoint.url, cache=root / "qcache", cache_key="test")
    cfg = small_config()
    result = build(client, cfg)
    out = root / "out"
    stats = write_build(out, result, cfg, "test endpoint", local_endpoint.fingerprint, "2026-01-01")
    return {"result": result, "stats": stats, "out": out, "client": client}
