"""SPARQL client edges (issue 14): control characters reach Oxigraph escaped, the backoff doubles, and bad URLs,
bad result shapes and unparseable Retry-After headers end in one-line errors or a plain retry."""
from __future__ import annotations

import json

import pytest

from fineked.sparql import SparqlClient, SparqlError, literal
from test_sparql_client import ScriptedServer


def test_every_escaped_character_round_trips_through_oxigraph(local_endpoint):
    """Planted bug: without the \\r escape, Oxigraph rejects the query (a raw CR is not allowed in a literal)."""
    client = SparqlClient(local_endpoint.url, cache=None)
    for text in ("a\rb", "a\r\nb", 'q"uote', "back\\slash", "tab\there", "bell\bform\ffeed", "new\nline"):
        rows = client.select("echo", f"SELECT ?x WHERE {{ BIND({literal(text, lang=None)} AS ?x) }}")
        assert rows == [{"x": text}], repr(text)


def test_backoff_doubles_between_retries():
    """Planted bug: a constant backoff; every other retry test sends Retry-After: 0, so none saw it."""
    srv = ScriptedServer([(503, {}, 0)] * 3 + [(200, {}, 0)])
    try:
        client = SparqlClient(srv.url, cache=None, backoff=0.1, retries=4)
        assert client.select("probe", "SELECT ?x WHERE { }") == [{"x": "hello"}]
    finally:
        srv.close()
    t = [r["t"] for r in srv.requests]
    gaps = [b - a for a, b in zip(t, t[1:])]
    assert len(gaps) == 3
    for gap, want in zip(gaps, (0.1, 0.2, 0.4)):
        assert want * 0.9 <= gap < want + 0.3, gaps


def test_an_unparseable_retry_after_falls_back_to_the_backoff():
    srv = ScriptedServer([(429, {"Retry-After": "soon"}, 0), (200, {}, 0)])
    try:
        rows = SparqlClient(srv.url, cache=None, backoff=0.01, retries=2).select("probe", "SELECT ?x WHERE { }")
    finally:
        srv.close()
    assert rows == [{"x": "hello"}]


def test_an_endpoint_without_a_scheme_is_one_line():
    with pytest.raises(SparqlError, match="is not an http\\(s\\) URL") as exc:
        SparqlClient("query.wikidata.org/sparql", cache=None)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("body", [{"results": {}}, {"results": []}, {"head": {}}, [1, 2]])
def test_a_result_without_bindings_is_one_line(body, monkeypatch):
    import test_sparql_client as t
    monkeypatch.setattr(t, "OK_BODY", json.dumps(body).encode())
    srv = ScriptedServer([(200, {}, 0)])
    try:
        with pytest.raises(SparqlError, match="not SPARQL JSON") as exc:
            SparqlClient(srv.url, cache=None, retries=1).select("probe", "SELECT ?x WHERE { }")
    finally:
        srv.close()
    assert "\n" not in str(exc.value)
