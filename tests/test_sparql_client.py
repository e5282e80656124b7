"""SparqlClient against loopback servers (retries, timeouts, dead endpoint) and the real Oxigraph (escaping, cache)."""
from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from fineked.endpoint import LocalEndpoint, free_port
from fineked.sparql import Fragment, SparqlClient, SparqlError, SparqlTimeout, iri, literal, render, value_pairs, values

OK_BODY = json.dumps({"head": {"vars": ["x"]},
                      "results": {"bindings": [{"x": {"type": "literal", "value": "hello"}}]}}).encode()


class ScriptedServer:
    """A loopback HTTP server answering POSTs from a script of (status, headers, delay) steps."""

    def __init__(self, script, delay_if=None, delay=0.0):
        self.script, self.requests = list(script), []
        self.delay_if, self.delay = delay_if, delay
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append({"t": time.monotonic(), "agent": self.headers.get("User-Agent"),
                                       "body": body, "method": "POST"})
                status, headers, delay = outer.script.pop(0) if outer.script else (200, {}, 0)
                if outer.delay_if is not None and outer.delay_if(body):
                    delay = outer.delay
                time.sleep(delay)
                payload = OK_BODY if status == 200 else b"busy"
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/sparql-results+json" if status == 200 else "text/plain")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/query"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_429_with_retry_after_then_200_is_retried_after_the_hinted_wait():
    srv = ScriptedServer([(429, {"Retry-After": "1"}, 0), (200, {}, 0)])
    try:
        client = SparqlClient(srv.url, cache=None, backoff=0.01, retries=3)
        rows = client.select("probe", "SELECT ?x WHERE { BIND('hello' AS ?x) }")
    finally:
        srv.close()
    assert rows == [{"x": "hello"}]
    assert len(srv.requests) == 2
    assert srv.requests[1]["t"] - srv.requests[0]["t"] >= 0.95  # Retry-After: 1 beats the 0.01 s backoff
    assert "fineked-suite" in srv.requests[0]["agent"]
    assert srv.requests[0]["body"].startswith(b"query=")  # POST form body, not a GET URL


def test_503_on_every_try_ends_in_one_line_error_naming_endpoint_query_and_fix():
    srv = ScriptedServer([(503, {"Retry-After": "0"}, 0)] * 3)
    try:
        client = SparqlClient(srv.url, cache=None, backoff=0.01, retries=3)
        with pytest.raises(SparqlError) as exc:
            client.select("subjects", "SELECT ?x WHERE { }")
    finally:
        srv.close()
    msg = str(exc.value)
    assert len(srv.requests) == 3
    assert "\n" not in msg and srv.url in msg and "subjects" in msg and "HTTP 503" in msg and "after 3 tries" in msg


def test_timeout_gives_a_clear_error_without_retrying_the_same_query():
    srv = ScriptedServer([(200, {}, 3), (200, {}, 3)])
    try:
        client = SparqlClient(srv.url, cache=None, timeout=1, backoff=0.01, retries=2)
        with pytest.raises(SparqlTimeout, match=r"query slow: timed out after 1 s; raise --timeout or lower --batch-size"):
            client.select("slow", "SELECT ?x WHERE { }")
    finally:
        srv.close()
    assert len(srv.requests) == 1  # the same query would time out again: the caller halves the batch instead


def test_a_batch_that_times_out_is_retried_as_two_halves():
    # the server stalls on any VALUES batch of more than two ids, as a slow endpoint stalls on big batches
    srv = ScriptedServer([], delay_if=lambda body: body.count(b"entity/Q") > 2, delay=3)
    try:
        client = SparqlClient(srv.url, cache=None, timeout=1, backoff=0.01, retries=2)
        ids = [f"Q{i}" for i in range(1, 9)]
        rows = client.run_batched("object_types", ids, lambda chunk: {"objects": values("o", chunk)})
    finally:
        srv.close()
    sizes = [r["body"].count(b"entity/Q") for r in srv.requests]
    assert sizes == [8, 4, 2, 2, 4, 2, 2]  # 8 -> 4 + 4 -> (2 + 2) + (2 + 2), depth first
    assert rows == [{"x": "hello"}] * 4 and client.splits["object_types"] == 3


def test_the_endpoints_own_time_limit_is_a_timeout(tmp_path):
    # Oxigraph stops a query at --timeout-s by cancelling the stream of a 200 response; that must read as a timeout
    with LocalEndpoint(timeout_s=1) as ep:
        client = SparqlClient(ep.url, cache=None, timeout=30)
        with pytest.raises(SparqlTimeout, match="stopped the query at its time limit"):
            client.select("heavy", "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o . ?s ?q ?r . ?r ?t ?u }")


def test_dead_endpoint_gives_a_clear_error():
    url = f"http://127.0.0.1:{free_port()}/query"
    client = SparqlClient(url, cache=None, backoff=0.01, retries=2)
    with pytest.raises(SparqlError) as exc:
        client.select("relations", "SELECT ?x WHERE { }")
    msg = str(exc.value)
    assert url in msg and "cannot connect" in msg and "fineked endpoint" in msg


def test_literal_escaping_round_trips_a_real_label_with_a_quote(local_endpoint):
    client = SparqlClient(local_endpoint.url, cache=None)
    # Q4006071 carries the alias `"I Am The Actor` (a lone double quote) in the snapshot.
    rows = client.run("entity_by_label", label=literal('"I Am The Actor'))
    assert [r["item"] for r in rows] == ["http://www.wikidata.org/entity/Q4006071"]
    # An injection attempt stays a string: no syntax error, no match, no extra graph pattern.
    assert client.run("entity_by_label", label=literal('x"@en . } UNION { ?item ?p ?o } #')) == []
    assert client.run("entity_by_label", label=literal("back\\slash\nnew\tline")) == []


def test_ids_are_validated_and_raw_strings_are_refused():
    assert iri("Q42") == "<http://www.wikidata.org/entity/Q42>"
    for bad in ["Q42> . ?s ?p ?o", "q42", "Q0", "P", "Q42 ", "wd:Q42"]:
        with pytest.raises(SparqlError):
            values("s", [bad])
    with pytest.raises(SparqlError):
        value_pairs("p", "o", [("P27", "Q30}")])
    with pytest.raises(TypeError):
        render("entity_by_label", label='"x"@en')  # a plain str never reaches the query text
    assert isinstance(literal("a"), Fragment)


def test_query_cache_answers_a_repeat_without_the_network(local_endpoint, tmp_path):
    client = SparqlClient(local_endpoint.url, cache=tmp_path, cache_key="k")
    first = client.run("relations", properties=values("prop", ["P36", "P1376"]))
    second = client.run("relations", properties=values("prop", ["P36", "P1376"]))
    assert first == second and {r["label"] for r in first} == {"capital", "capital of"}
    assert client.network_queries["relations"] == 1 and client.cache_hits["relations"] == 1
