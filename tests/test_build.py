"""The builder on the real local endpoint: METHOD.md §2 properties checked against independent SPARQL and numpy."""
from __future__ import annotations

import re

import numpy as np
import pytest

from conftest import small_config
from fineked.build import BuildError, build
from fineked.records import LEVELS
from fineked.similarity import embed, relation_similarity, RelationText
from fineked.sparql import SparqlClient, SparqlError, iri, values
from fineked.build import queries_digest
from fineked.paths import QUERIES


def ask(client, s, p, o) -> bool:
    rows = client.select("check", f"PREFIX wdt: <http://www.wikidata.org/prop/direct/>\n"
                                  f"SELECT (COUNT(*) AS ?n) WHERE {{ {iri(s)} wdt:{p} {iri(o)} }}")
    return int(rows[0]["n"]) > 0


def test_cases_follow_the_recipe(small_build, local_endpoint):
    recs = small_build["result"].eval_records
    check = SparqlClient(local_endpoint.url, cache=None)
    assert len(recs) == 40
    for r in recs[:15]:
        assert ask(check, r["subject_id"], r["relation_id"], r["target_true"]["id"])  # the edited fact is real
        assert not ask(check, r["subject_id"], r["relation_id"], r["target_new"]["id"])  # o* is never a true value
        assert r["subject"] in r["prompt"] and all(r["subject"] in p for p in r["paraphrase_prompts"])
        for f in r["fine_grained"]:
            assert f["relation_id"] != r["relation_id"] and f["target"]["id"] != r["target_new"]["id"]
            assert ask(check, r["subject_id"], f["relation_id"], f["target"]["id"])


def test_constraint_facts_never_overlap_the_scored_facts(small_build):
    recs = small_build["result"].eval_records
    assert sum(len(r["constraint_facts"]) for r in recs) > 0
    for r in recs:
        fine = {(f["relation_id"], f["prompt"]) for f in r["fine_grained"]}
        held = {(c["relation_id"], c["prompt"]) for c in r["constraint_facts"]}
        assert not fine & held and len(r["constraint_facts"]) <= 2
        assert {c["relation_id"] for c in r["constraint_facts"]}.isdisjoint({f["relation_id"] for f in r["fine_grained"]})


def test_levels_are_tertiles_with_increasing_similarity(small_build):
    res, stats = small_build["result"], small_build["stats"]
    sims = [f["similarity"] for r in res.eval_records for f in r["fine_grained"]]
    lo, hi = np.quantile(sims, [1 / 3, 2 / 3])
    assert res.thresholds == pytest.approx((lo, hi), abs=1e-6)
    for r in res.eval_records:
        for f in r["fine_grained"]:
            want = "easy" if f["similarity"] < res.thresholds[0] else ("middle" if f["similarity"] < res.thresholds[1] else "hard")
            assert f["level"] == want
    means = [stats["levels"][lv]["mean_similarity"] for lv in LEVELS]
    assert means[0] < means[1] < means[2]


def test_fact_similarity_is_the_cosine_of_the_relation_texts(small_build):
    res = small_build["result"]
    r = next(r for r in res.eval_records if r["fine_grained"])
    f = r["fine_grained"][0]
    a, b = res.relations[r["relation_id"]], res.relations[f["relation_id"]]
    va, vb = embed([a.text(), b.text()])
    assert f["similarity"] == pytest.approx(float(va @ vb / np.linalg.norm(va) / np.linalg.norm(vb)), abs=1e-5)


def test_similarity_orders_close_relations_above_distant_ones():
    rels = [RelationText("P36", "capital", "seat of government of a country"),
            RelationText("P1376", "capital of", "country of which the municipality is the governmental seat"),
            RelationText("P106", "occupation", "occupation of a person")]
    sim = relation_similarity(rels)
    assert sim[("P36", "P36")] == pytest.approx(1.0, abs=1e-5)
    assert sim[("P36", "P1376")] > sim[("P36", "P106")]


def test_krd_train_subjects_are_disjoint_and_carry_all_siblings(small_build):
    res = small_build["result"]
    assert len(res.krd_records) == 150
    assert not {r["subject_id"] for r in res.eval_records} & {r["subject_id"] for r in res.krd_records}
    by_subject = {}
    for r in res.krd_records:
        by_subject.setdefault(r["subject_id"], set()).add(r["relation_id"])
    for r in res.krd_records[:50]:
        siblings = {f["relation_id"] for f in r["fine_grained"]}
        assert r["relation_id"] not in siblings
        assert siblings >= by_subject[r["subject_id"]] - {r["relation_id"]}


def test_subject_facts_come_from_batched_queries(small_build):
    client = small_build["client"]
    assert client.network_queries["subject_facts"] * 20 <= 40 + 150  # one VALUES query per batch of subjects


def test_rebuild_with_a_fresh_cache_is_identical_and_a_warm_cache_only_asks_the_empty_queries(small_build, local_endpoint, tmp_path):
    a = small_build["result"]
    client = SparqlClient(local_endpoint.url, cache=tmp_path / "q", cache_key="again")
    b = build(client, small_config())
    assert a.results_fingerprint == b.results_fingerprint and a.eval_records == b.eval_records
    empty = sum(client.empty_results.values())
    warm = SparqlClient(local_endpoint.url, cache=tmp_path / "q", cache_key="again")
    c = build(warm, small_config())
    assert c.eval_records == a.eval_records
    # non-empty results come from the cache; empty ones (e.g. a band above every item) are never cached
    assert sum(warm.network_queries.values()) == empty and sum(warm.cache_hits.values()) > 0


def test_cases_come_from_the_most_linked_subjects_in_order(small_build, local_endpoint):
    recs = small_build["result"].eval_records
    check = SparqlClient(local_endpoint.url, cache=None)
    ids = [r["subject_id"] for r in recs]
    rows = check.select("links", "PREFIX wikibase: <http://wikiba.se/ontology#>\n"
                                 f"SELECT ?s ?n WHERE {{ {values('s', ids)} ?s wikibase:sitelinks ?n }}")
    links = {r["s"].rsplit("/", 1)[1]: int(r["n"]) for r in rows}
    seq = [links[s] for s in ids]
    assert seq == sorted(seq, reverse=True)  # most linked first
    krd_links = check.select("links", "PREFIX wikibase: <http://wikiba.se/ontology#>\n"
                             f"SELECT (MAX(?n) AS ?m) WHERE {{ {values('s', sorted({r['subject_id'] for r in small_build['result'].krd_records}))} "
                             "?s wikibase:sitelinks ?n }")
    assert int(krd_links[0]["m"]) <= seq[0]


def test_queries_are_portable_and_never_group_the_whole_graph():
    for path in sorted(QUERIES.glob("*.rq")):
        text = path.read_text()
        body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        assert "GROUP BY" not in body.upper() and "hint:" not in body and "SERVICE" not in body.upper(), path.name
        declared = set(re.findall(r"^PREFIX (\w+):", body, re.M))
        used = set(re.findall(r"\b(\w+):\w", re.sub(r"<[^>]*>", "", body))) - {"http", "https"}
        assert used <= declared, f"{path.name} uses undeclared prefixes {used - declared}"


def test_card_records_endpoint_date_query_digest_and_sampling_rule(small_build):
    card = (small_build["out"] / "README.md").read_text()
    assert "**Endpoint:** test endpoint" in card and "**Build date:** 2026-01-01" in card
    assert queries_digest() in card and "descending order of wikibase:sitelinks" in card


def test_unknown_property_is_a_one_line_error(local_endpoint):
    client = SparqlClient(local_endpoint.url, cache=None)
    with pytest.raises(BuildError, match="unknown property P99999"):
        build(client, small_config(relations=("P19", "P99999")))


def test_bands_are_sized_from_the_density_of_the_band_above():
    from fineked.build import next_band

    assert next_band(4096, 0, 0, 5000, 6) == list(range(4095, 2047, -1))  # nothing above: halve
    # 6,000 items over 16 counts = 375 per count: 5,000 / 375 -> 13 counts
    assert next_band(64, 6000, 16, 5000, 6) == list(range(63, 50, -1))
    assert next_band(32, 1000, 16, 5000, 6) == list(range(31, 15, -1))  # 80 counts wanted, capped at hi/2 = 16
    assert next_band(12, 40000, 4, 5000, 6) == [11]  # dense: one count
    assert next_band(8, 10, 4, 5000, 6) == [7, 6]  # never below the floor


def test_a_band_over_the_limit_is_split_and_its_lower_half_only_fetched_when_needed(local_endpoint):
    client = SparqlClient(local_endpoint.url, cache=None)
    # the snapshot's 664 items with 256-511 sitelinks reach a LIMIT of 500 (no single count does: 487 have 350)
    res = build(client, small_config(band_rows=200, band_limit=500, batch_size=20))
    seq = [(t.name, t.rows) for t in client.timings if t.name in ("popular_subjects", "subject_facts")]
    pieces = [n for name, n in seq if name == "popular_subjects"]
    # an oversized band is counted (band_size.rq) and split before any of its rows is fetched
    assert client.splits["popular_subjects"] > 0 and client.network_queries["band_size"] > 0
    assert max(pieces) < 500
    # every non-empty piece under the LIMIT is walked (its facts asked) before the next piece is fetched
    for (name, n), (after, _) in zip(seq, seq[1:]):
        if name == "popular_subjects" and 0 < n < 500:
            assert after == "subject_facts"
    whole = [n for n in pieces if 0 < n < 500]
    unwalked = sum(whole) - res.sampling["subjects_sampled"]
    assert 0 <= unwalked < whole[-1]  # no piece fetched beyond the one the walk stopped in


def test_band_size_counts_a_band_up_to_the_limit(local_endpoint):
    from fineked.sparql import integer, integer_values

    client = SparqlClient(local_endpoint.url, cache=None)
    band = list(range(511, 255, -1))
    # independent count: every item of the band, no LIMIT (664 on the snapshot)
    total = sum(int(client.select("check", "PREFIX wikibase: <http://wikiba.se/ontology#>\n"
                                  f"SELECT (COUNT(*) AS ?n) WHERE {{ ?s wikibase:sitelinks {n} }}")[0]["n"]) for n in band)
    assert total > 500
    for limit in (100, total, total + 1, 10_000):
        got = client.run("band_size", counts=integer_values("links", band), limit=integer(limit))
        assert int(got[0]["n"]) == min(total, limit)


def test_subject_facts_return_only_the_pool_relations(local_endpoint):
    from fineked.sparql import direct_claims

    client = SparqlClient(local_endpoint.url, cache=None)
    subjects = ["Q90", "Q64", "Q1055"]  # Paris, Berlin, Hamburg
    rows = client.run("subject_facts", subjects=values("s", subjects), properties=direct_claims(["P17", "P31"]))
    got = {(r["s"].rsplit("/", 1)[1], r["p"].rsplit("/", 1)[1], r["o"]) for r in rows}
    want = set()
    for p in ("P17", "P31"):
        for r in client.select("check", f"SELECT ?s ?o WHERE {{ {values('s', subjects)} ?s <http://www.wikidata.org/prop/direct/{p}> ?o }}"):
            want.add((r["s"].rsplit("/", 1)[1], p, r["o"]))
    assert got == want and {p for _, p, _ in got} == {"P17", "P31"}
    with pytest.raises(SparqlError, match="not a WikiData property"):
        direct_claims(["Q5"])
