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
    assert (store / ".loaded").exists() and store_for(SNAPSHOT) == store
    ep = LocalEndpoint()
    with ep:
        proc = ep.proc
        assert proc is not None and proc.poll() is None
    assert proc.poll() is not None  # the server process is gone
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(ep.url, timeout=2)
