"""The local endpoint: loads the snapshot once, answers real SPARQL on 127.0.0.1, stops cleanly."""
from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from fineked.endpoint import LocalEndpoint, store_for
from fineked.paths import SNAPSHOT
from fineked.sparql import SparqlClient, iri


def test_endpoint_serves_the_snapshot_on_loopback(local_endpoint):
    assert local_endpoint.url.startswith("http://127.0.0.1:") and local_endpoint.url.endswith("/query")
    client = SparqlClient(local_endpoint.url, cache=None)
    rows = client.select("capital_of_france", f"""
        PREFIX wdt: <http://www.wikidata.org/prop/direct/>
        PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
        SELECT ?l WHERE {{ {iri('Q142')} wdt:P36 ?c . ?c rdfs:label ?l FILTER(LANG(?l) = "en") }}""")
    assert rows == [{"l": "Paris"}]


def test_store_is_cached_and_a_second_endpoint_stops_cleanly():
    store = store_for(SNAPSHOT)
    assert (store / ".loaded").exists() and (store / ".compacted").exists() and store_for(SNAPSHOT) == store
    ep = LocalEndpoint()
    with ep:
        proc = ep.proc
        assert proc is not None and proc.poll() is None
    assert proc.poll() is not None  # the server process is gone
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(ep.url, timeout=2)


def _sst_files(store):
    return sorted(p.name for p in store.glob("*.sst"))


def test_a_store_loaded_in_batches_is_compacted_once(tmp_path, monkeypatch):
    """A store loaded before compaction existed (two bulk batches, a `.loaded` marker) is compacted on first use:
    its overlapping SST files are merged, which is what keeps query cost flat as the graph grows."""
    import subprocess

    from fineked.endpoint import oxigraph_binary
    from fineked.paths import file_sha256

    monkeypatch.setenv("FINEKED_CACHE", str(tmp_path / "cache"))
    lines = [f"<http://www.wikidata.org/entity/Q{i}> <http://www.wikidata.org/prop/direct/P31> "
             f"<http://www.wikidata.org/entity/Q{i % 97}> .\n" for i in range(20000)]
    snapshot = tmp_path / "snap.nt"
    snapshot.write_text("".join(lines))
    store = tmp_path / "cache" / "oxigraph" / file_sha256(snapshot)[:16]
    store.parent.mkdir(parents=True)
    for half, part in enumerate((lines[:10000], lines[10000:])):
        f = tmp_path / f"half{half}.nt"
        f.write_text("".join(part))
        subprocess.run([oxigraph_binary(), "load", "--location", str(store), "--file", str(f)], check=True,
                       capture_output=True)
    (store / ".loaded").write_text("snap.nt\n")
    before = _sst_files(store)

    assert store_for(snapshot) == store
    after = _sst_files(store)
    assert (store / ".compacted").exists()
    assert len(after) < len(before), f"not compacted: {len(before)} SST files before, {len(after)} after"
    assert store_for(snapshot) == store and _sst_files(store) == after  # once
    with LocalEndpoint(snapshot=snapshot) as ep:
        rows = SparqlClient(ep.url, cache=None).select("count", "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }")
    assert rows == [{"n": "20000"}]
