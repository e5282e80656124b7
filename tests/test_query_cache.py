"""The query cache is honest: it never keeps an empty result or a failed build's answers, records where and when
each entry came from, refreshes on demand and warns about old entries from remote endpoints.

The fix-the-endpoint story runs on real Oxigraph servers on 127.0.0.1, each serving a small WikiData-shaped
store cut from the bundled snapshot: one that lacks triples, then the fixed one, behind the same endpoint name.
"""
from __future__ import annotations

import calendar
import gzip
import logging
import time
from collections import Counter, defaultdict

import pytest

from conftest import small_config
from fineked.build import BuildError, build
from common.cache import read_json_entry, write_json_entry
from fineked.endpoint import LocalEndpoint
from fineked.paths import SNAPSHOT
from fineked.sparql import SparqlClient, literal, query_digest, values

RELATIONS = ("P17", "P19", "P20", "P27", "P30", "P36", "P37", "P103", "P106", "P1412")
WD, WDT = "<http://www.wikidata.org/entity/", "<http://www.wikidata.org/prop/direct/"
SITELINKS = "<http://wikiba.se/ontology#sitelinks>"
LABEL = "<http://www.w3.org/2000/01/rdf-schema#label>"


@pytest.fixture(scope="module")
def mirror_lines() -> list[str]:
    """A small mirror: the 300 most linked snapshot subjects with facts under >= 3 of RELATIONS, their facts,
    labels and sitelinks, their objects' labels and classes, and the properties' metadata."""
    lines = gzip.open(SNAPSHOT, "rt", encoding="utf-8").read().splitlines()
    by_subject: dict[str, list[str]] = defaultdict(list)
    for line in lines:
        by_subject[line.split(" ", 1)[0]].append(line)
    links = {ln.split(" ", 1)[0]: int(ln.split('"')[1]) for ln in lines if f" {SITELINKS} " in ln}
    rel_preds = {f"{WDT}{p}>" for p in RELATIONS}
    n_rel = Counter()
    for line in lines:
        s, p, _ = line.split(" ", 2)
        if p in rel_preds:
            n_rel[s] += 1
    eligible = [s for s in n_rel if n_rel[s] >= 3 and s in links]
    chosen = sorted(eligible, key=lambda s: (-links[s], s))[:300]
    keep, objects = set(), set()
    for s in chosen:
        for line in by_subject[s]:
            _, p, o = line.split(" ", 2)
            if p in rel_preds or p in (SITELINKS, LABEL):
                keep.add(line)
                if p in rel_preds:
                    objects.add(o[:-2])
    for o in objects:
        keep.update(ln for ln in by_subject[o] if f" {LABEL} " in ln or f" {WDT}P31> " in ln)
    for p in RELATIONS:
        keep.update(by_subject[f"{WD}{p}>"])
    return sorted(keep)


def write_nt(path, lines) -> None:
    path.write_text("\n".join(lines) + "\n")


def cfg():
    return small_config(relations=RELATIONS, max_cases=12, krd_samples=30)


@pytest.fixture()
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FINEKED_CACHE", str(tmp_path / "cache"))  # the mirrors' Oxigraph stores go here
    return tmp_path / "queries"


def test_fixing_the_endpoint_fixes_the_build_without_no_cache(mirror_lines, own_cache, tmp_path):
    broken = tmp_path / "broken.nt"
    write_nt(broken, [ln for ln in mirror_lines if f" {SITELINKS} " not in ln])  # a mirror loaded without sitelinks
    fixed = tmp_path / "fixed.nt"
    write_nt(fixed, mirror_lines)
    with LocalEndpoint(snapshot=broken) as ep:
        client = SparqlClient(ep.url, cache=own_cache, cache_key="https://mirror.example/sparql")
        with pytest.raises(BuildError, match="empty result"):
            build(client, cfg())
    with LocalEndpoint(snapshot=fixed) as ep:  # the same endpoint, fixed
        client = SparqlClient(ep.url, cache=own_cache, cache_key="https://mirror.example/sparql")
        result = build(client, cfg())
    assert len(result.eval_records) == 12 and client.network_queries["popular_subjects"] > 0


def test_a_failed_build_drops_the_partial_answers_it_cached(mirror_lines, own_cache, tmp_path):
    p19_label = f"{WD}P19> {LABEL} "
    broken = tmp_path / "broken.nt"
    write_nt(broken, [ln for ln in mirror_lines if not ln.startswith(p19_label)])  # P19 lost its English label
    fixed = tmp_path / "fixed.nt"
    write_nt(fixed, mirror_lines)
    with LocalEndpoint(snapshot=broken) as ep:
        client = SparqlClient(ep.url, cache=own_cache, cache_key="https://mirror.example/sparql")
        with pytest.raises(BuildError, match="unknown property P19"):
            build(client, cfg())  # the relations query answered, non-empty but without P19
    assert not list(own_cache.rglob("*.json"))
    with LocalEndpoint(snapshot=fixed) as ep:
        client = SparqlClient(ep.url, cache=own_cache, cache_key="https://mirror.example/sparql")
        assert len(build(client, cfg()).eval_records) == 12


def test_an_entry_records_endpoint_digest_and_fetch_time_and_empty_results_are_not_kept(local_endpoint, tmp_path):
    client = SparqlClient(local_endpoint.url, cache=tmp_path, cache_key="k")
    q = client.run("relations", properties=values("prop", ["P36"]))
    (entry_path,) = client.written
    entry = read_json_entry(entry_path)
    assert entry["endpoint"] == "k" and entry["rows"] == q
    assert entry["query_digest"].startswith("sha256:") and len(entry["query_digest"]) == 71
    assert abs(time.time() - calendar.timegm(time.strptime(entry["fetched_at"], "%Y-%m-%dT%H:%M:%SZ"))) < 120
    assert client.run("entity_by_label", label=literal("no such label xyz")) == []
    assert client.empty_results["entity_by_label"] == 1 and len(client.written) == 1
    client.run("entity_by_label", label=literal("no such label xyz"))
    assert client.network_queries["entity_by_label"] == 2  # asked again, never answered from the cache


def test_refresh_refetches_and_overwrites(local_endpoint, tmp_path):
    SparqlClient(local_endpoint.url, cache=tmp_path, cache_key="k").run("relations", properties=values("prop", ["P36"]))
    (path,) = list(tmp_path.rglob("*.json"))
    old = read_json_entry(path)
    old["fetched_at"] = "2001-01-01T00:00:00Z"
    write_json_entry(path, old)
    fresh = SparqlClient(local_endpoint.url, cache=tmp_path, cache_key="k", refresh=True)
    fresh.run("relations", properties=values("prop", ["P36"]))
    assert fresh.network_queries["relations"] == 1 and fresh.cache_hits["relations"] == 0
    assert read_json_entry(path)["fetched_at"] > "2020"


def test_old_entries_from_a_remote_endpoint_warn_and_local_ones_do_not(tmp_path, caplog):
    query = "SELECT ?x WHERE { BIND('hello' AS ?x) }"
    for url, expect in (("https://query.wikidata.org/sparql", 1), ("http://127.0.0.1:9/query", 0)):
        client = SparqlClient(url, cache=tmp_path / url.split("/")[2], max_age_days=30)
        path = client._cache_path(query)
        write_json_entry(path, {"endpoint": url, "query_digest": query_digest(query),
                                "fetched_at": "2001-01-01T00:00:00Z", "rows": [{"x": "hello"}]})
        with caplog.at_level(logging.WARNING, logger="fineked.sparql"):
            caplog.clear()
            assert client.select("probe", query) == [{"x": "hello"}]  # no network: answered from the cache
            assert client.warn_stale() == expect
        assert (expect == 1) == any("older than 30 days" in r.getMessage() and "--refresh" in r.getMessage()
                                    for r in caplog.records)


def test_an_empty_or_old_format_entry_already_on_disk_is_asked_again(local_endpoint, tmp_path):
    client = SparqlClient(local_endpoint.url, cache=tmp_path, cache_key="k")
    fragment = values("prop", ["P36"])
    from fineked.sparql import render

    path = client._cache_path(render("relations", properties=fragment))
    path.parent.mkdir(parents=True)
    empty = {"endpoint": "k", "query_digest": query_digest(render("relations", properties=fragment)),
             "fetched_at": "2026-01-01T00:00:00Z", "rows": []}
    for write in (lambda: path.write_text("[]"), lambda: write_json_entry(path, empty)):
        write()  # an empty answer cached by an older version of the suite, or by hand
        assert client.run("relations", properties=fragment)[0]["label"] == "capital"
    assert client.network_queries["relations"] == 2 and client.cache_hits["relations"] == 0
