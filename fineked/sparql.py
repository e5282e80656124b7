"""SPARQL over HTTP with SPARQLWrapper: POST + JSON, retries with backoff, an on-disk query cache, safe interpolation.

Queries live in fineked/queries/*.rq as portable SPARQL (explicit PREFIXes, rdfs:label joins, no label
service, no hint:), so the same files run on the local Oxigraph and on query.wikidata.org. Placeholders
are written `{{name}}` and only accept fragments built by `values()`, `iri()` or `literal()`, which
validate ids and escape strings.
"""
from __future__ import annotations

import calendar
import email.utils
import hashlib
import json
import logging
import re
import socket
import time
import urllib.error
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from SPARQLWrapper import JSON, POST, SPARQLWrapper
from SPARQLWrapper.SPARQLExceptions import SPARQLWrapperException

from common.cache import read_json_entry, write_json_entry
from fineked.paths import QUERIES, cache_dir

log = logging.getLogger(__name__)

USER_AGENT = "fineked-suite/0.1 (FINE-KED benchmark builder; https://github.com/fineked/fineked-suite) SPARQLWrapper/2"
RETRY_STATUS = {429, 503}
ENTITY_RE = re.compile(r"^[QP][1-9][0-9]{0,11}$")
LANG_RE = re.compile(r"^[a-zA-Z]{1,8}(-[a-zA-Z0-9]{1,8})*$")
PLACEHOLDER_RE = re.compile(r"\{\{(\w+)\}\}")
WD = "http://www.wikidata.org/entity/"
WDT = "http://www.wikidata.org/prop/direct/"


class SparqlError(RuntimeError):
    """A SPARQL failure the user can act on; the message is one line naming endpoint, query and the fix."""


class SparqlTimeout(SparqlError):
    """The query ran past the client's or the endpoint's time limit; a smaller batch may pass."""


class Fragment(str):
    """A piece of SPARQL that went through validation or escaping; the only thing `render` interpolates."""


def check_id(value: str) -> str:
    if not isinstance(value, str) or not ENTITY_RE.match(value):
        raise SparqlError(f"{value!r} is not a WikiData id (expected Q123 or P123)")
    return value


def iri(entity_id: str) -> Fragment:
    return Fragment(f"<{WD}{check_id(entity_id)}>")


def values(var: str, ids: list[str] | tuple[str, ...]) -> Fragment:
    """`VALUES ?var { wd:Q1 wd:Q2 }` from validated ids."""
    if not re.match(r"^\w+$", var):
        raise SparqlError(f"bad SPARQL variable name {var!r}")
    if not ids:
        raise SparqlError(f"empty VALUES block for ?{var}")
    return Fragment(f"VALUES ?{var} {{ " + " ".join(iri(i) for i in ids) + " }")


def direct_claims(ids: list[str] | tuple[str, ...]) -> Fragment:
    """`<.../prop/direct/P1>, <.../prop/direct/P2>` from validated property ids, for `FILTER(?p IN (...))`."""
    if not ids:
        raise SparqlError("empty list of properties")
    for i in ids:
        if not check_id(i).startswith("P"):
            raise SparqlError(f"{i!r} is not a WikiData property id (expected P123)")
    return Fragment(", ".join(f"<{WDT}{i}>" for i in ids))


def value_pairs(var_a: str, var_b: str, pairs: list[tuple[str, str]]) -> Fragment:
    """`VALUES (?a ?b) { (wd:P1 wd:Q1) ... }` from validated id pairs."""
    if not pairs:
        raise SparqlError(f"empty VALUES block for (?{var_a} ?{var_b})")
    body = " ".join(f"({iri(a)} {iri(b)})" for a, b in pairs)
    return Fragment(f"VALUES (?{var_a} ?{var_b}) {{ {body} }}")


def integer_values(var: str, numbers: list[int]) -> Fragment:
    """`VALUES ?var { 3 2 1 }` from validated integers (xsd:integer, as WikiData stores sitelink counts)."""
    if not re.match(r"^\w+$", var):
        raise SparqlError(f"bad SPARQL variable name {var!r}")
    if not numbers:
        raise SparqlError(f"empty VALUES block for ?{var}")
    return Fragment(f"VALUES ?{var} {{ " + " ".join(integer(n) for n in numbers) + " }")


def integer(n: int) -> Fragment:
    if isinstance(n, bool) or not isinstance(n, int):
        raise SparqlError(f"{n!r} is not an integer")
    return Fragment(str(n))


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def literal(text: str, lang: str | None = "en") -> Fragment:
    """A SPARQL string literal (STRING_LITERAL2) with every character the grammar forbids escaped."""
    if lang is not None and not LANG_RE.match(lang):
        raise SparqlError(f"bad language tag {lang!r}")
    body = "".join(_ESCAPES.get(ch, ch) for ch in text)
    return Fragment(f'"{body}"' + (f"@{lang}" if lang else ""))


def load_query(name: str) -> str:
    path = QUERIES / f"{name}.rq"
    if not path.exists():
        raise FileNotFoundError(f"no query file {path}")
    return path.read_text()


def render(name: str, **params: Fragment) -> str:
    text = load_query(name)
    wanted = set(PLACEHOLDER_RE.findall(text))
    if wanted != set(params):
        raise SparqlError(f"query {name}: placeholders {sorted(wanted)} but got {sorted(params)}")
    for k, v in params.items():
        if not isinstance(v, Fragment):
            raise TypeError(f"query {name}: parameter {k} must be built by values()/iri()/literal(), not a raw str")
    return PLACEHOLDER_RE.sub(lambda m: params[m.group(1)], text)


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    value = exc.headers.get("Retry-After") if exc.headers else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # an HTTP date; anything else ("soon") is no hint: the exponential backoff applies
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time()) if when else None


def _simplify(result: dict) -> list[dict[str, str]]:
    rows = []
    for b in result["results"]["bindings"]:
        rows.append({k: v["value"] for k, v in b.items()})
    return rows


# How endpoints say "this query ran past my limit": Oxigraph cancels the stream of a 200 response,
# Blazegraph (WDQS) answers 500 with a java TimeoutException.
_SERVER_TIMEOUT_MARKS = ("operation has been cancelled", "TimeoutException", "Query timeout", "query timeout")

LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def is_local(endpoint: str) -> bool:
    host = urllib.parse.urlsplit(endpoint).netloc.rsplit("@", 1)[-1]
    return any(host == h or host.startswith(h + ":") for h in LOCAL_HOSTS)


def query_digest(query: str) -> str:
    return "sha256:" + hashlib.sha256(query.encode()).hexdigest()


@dataclass
class QueryTiming:
    name: str
    seconds: float
    rows: int


@dataclass
class SparqlClient:
    """SELECTs over HTTP (POST, JSON) with retries, per-query timeouts and an on-disk cache of non-empty results.

    Cache entry: {"endpoint", "query_digest", "fetched_at" (UTC ISO), "rows"}. Empty results and errors are
    never stored (a fixed endpoint must be asked again). `refresh` refetches and overwrites; entries older
    than `max_age_days` used against a non-local endpoint are counted in `stale_hits` and warned about.
    """

    endpoint: str
    timeout: float = 60.0
    retries: int = 5
    backoff: float = 1.0
    max_wait: float = 120.0
    cache: Path | None = field(default_factory=lambda: cache_dir() / "sparql")
    user_agent: str = USER_AGENT
    cache_key: str | None = None  # stands in for the URL in cache keys (the local endpoint's port changes per run)
    refresh: bool = False
    max_age_days: float = 30.0
    network_queries: Counter = field(default_factory=Counter)
    cache_hits: Counter = field(default_factory=Counter)
    stale_hits: Counter = field(default_factory=Counter)
    rows: Counter = field(default_factory=Counter)
    timings: list[QueryTiming] = field(default_factory=list)
    splits: Counter = field(default_factory=Counter)
    empty_results: Counter = field(default_factory=Counter)
    written: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        if urllib.parse.urlsplit(self.endpoint).scheme not in ("http", "https"):
            raise SparqlError(f"endpoint {self.endpoint!r} is not an http(s) URL; e.g. https://query.wikidata.org/sparql")

    def _cache_path(self, query: str) -> Path | None:
        if self.cache is None:
            return None
        key = hashlib.sha256(f"{self.cache_key or self.endpoint}\n{query}".encode()).hexdigest()
        return self.cache / key[:2] / f"{key}.json"

    def _read_cache(self, name: str, path: Path | None, query: str) -> list[dict[str, str]] | None:
        if path is None or self.refresh:
            return None
        digest = query_digest(query)

        def check(entry) -> str | None:
            if not isinstance(entry, dict) or not isinstance(entry.get("rows"), list):
                return "not a query cache entry"  # e.g. an older version's bare row list: refetched
            if entry.get("query_digest") != digest:
                return "entry of another query"
            return None if entry["rows"] else "empty result"  # never answer from an empty entry

        entry = read_json_entry(path, check)  # missing, torn or failing the check: None (refetched, overwritten)
        if entry is None:
            return None
        fetched = calendar.timegm(time.strptime(entry["fetched_at"], "%Y-%m-%dT%H:%M:%SZ"))
        if not is_local(self.endpoint) and time.time() - fetched > self.max_age_days * 86400:
            self.stale_hits[name] += 1
        return entry["rows"]

    def _write_cache(self, path: Path | None, query: str, rows: list[dict[str, str]]) -> None:
        if path is None or not rows:
            return  # an empty result may be a broken endpoint: never let it outlive the fix
        write_json_entry(path, {"endpoint": self.cache_key or self.endpoint, "query_digest": query_digest(query),
                                "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows})
        self.written.append(path)

    def forget_written(self) -> int:
        """Delete the cache entries this client wrote: a build that failed on its data may have cached a broken
        endpoint's partial answers (a property without its label, ...), which must not outlive the fix."""
        n = 0
        for path in self.written:
            if path.exists():
                path.unlink()
                n += 1
        self.written.clear()
        return n

    def select(self, name: str, query: str) -> list[dict[str, str]]:
        """Run a SELECT; rows map variable -> value string. Cached on disk by endpoint + query text."""
        path = self._cache_path(query)
        rows = self._read_cache(name, path, query)
        if rows is not None:
            self.cache_hits[name] += 1
        else:
            t0 = time.perf_counter()
            rows = _simplify(self._fetch(name, query))
            self.timings.append(QueryTiming(name, time.perf_counter() - t0, len(rows)))
            self.network_queries[name] += 1
            self.empty_results[name] += not rows
            self._write_cache(path, query, rows)
        self.rows[name] += len(rows)
        return rows

    def run(self, name: str, **params: Fragment) -> list[dict[str, str]]:
        return self.select(name, render(name, **params))

    def run_batched(self, name: str, items: list, params: Callable[[list], dict[str, Fragment]]) -> list[dict[str, str]]:
        """Run a query over a VALUES batch; a batch that times out is run again as two halves (down to one item)."""
        try:
            return self.run(name, **params(items))
        except SparqlTimeout:
            if len(items) <= 1:
                raise
            half = len(items) // 2
            self.splits[name] += 1
            log.warning("%s timed out on a batch of %d; running it as two batches of %d and %d",
                        name, len(items), half, len(items) - half)
            return self.run_batched(name, items[:half], params) + self.run_batched(name, items[half:], params)

    def warn_stale(self) -> int:
        """Log one warning if stale cache entries were used; returns how many."""
        n = sum(self.stale_hits.values())
        if n:
            log.warning("%d cached SPARQL results for %s are older than %g days; rebuild with --refresh to refetch "
                        "them", n, self.endpoint, self.max_age_days)
        return n

    def _fetch(self, name: str, query: str) -> dict:
        where = f"endpoint {self.endpoint}, query {name}"
        last = "no attempt"
        for attempt in range(self.retries):
            wait = self.backoff * (2 ** attempt)
            sw = SPARQLWrapper(self.endpoint, agent=self.user_agent)
            sw.setMethod(POST)  # Oxigraph rejects GET URLs past ~8 KB; VALUES batches are long
            sw.setReturnFormat(JSON)
            sw.setTimeout(int(max(1, round(self.timeout))))
            sw.setQuery(query)
            try:
                raw = sw.query().response.read()
            except urllib.error.HTTPError as exc:
                if exc.code not in RETRY_STATUS:
                    raise SparqlError(f"{where}: HTTP {exc.code} {exc.reason}; check the endpoint URL and access") from exc
                last = f"HTTP {exc.code}"
                hinted = _retry_after(exc)
                if hinted is not None:
                    wait = hinted
            except (TimeoutError, socket.timeout) as exc:
                raise SparqlTimeout(f"{where}: timed out after {self.timeout:g} s; raise --timeout or lower --batch-size") from exc
            except urllib.error.URLError as exc:
                if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                    raise SparqlTimeout(f"{where}: timed out after {self.timeout:g} s; raise --timeout or lower --batch-size") from exc
                last = f"cannot connect ({exc.reason})"
            except ConnectionError as exc:
                last = f"connection failed ({exc})"
            except SPARQLWrapperException as exc:
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if any(m in str(exc) for m in _SERVER_TIMEOUT_MARKS):
                    raise SparqlTimeout(f"{where}: the endpoint stopped the query at its time limit; lower --batch-size") from exc
                raise SparqlError(f"{where}: {msg}; the query was rejected, check fineked/queries/{name}.rq") from exc
            else:
                return self._parse(where, raw)
            if attempt + 1 < self.retries:
                wait = min(wait, self.max_wait)
                log.warning("%s: %s; retry %d/%d in %.1f s", where, last, attempt + 1, self.retries - 1, wait)
                time.sleep(wait)
        raise SparqlError(f"{where}: {last} after {self.retries} tries; start the endpoint (`fineked endpoint`), "
                          "pass a reachable --endpoint, or raise the timeout")

    @staticmethod
    def _parse(where: str, raw: bytes) -> dict:
        text = raw.decode("utf-8", errors="replace")
        try:
            result = json.loads(text)
        except json.JSONDecodeError as exc:
            if any(m in text for m in _SERVER_TIMEOUT_MARKS):
                raise SparqlTimeout(f"{where}: the endpoint stopped the query at its time limit; lower --batch-size") from exc
            raise SparqlError(f"{where}: the response is not SPARQL JSON (label service or a proxy page?); "
                              "use plain rdfs:label joins and check the URL") from exc
        results = result.get("results") if isinstance(result, dict) else None
        if not isinstance(results, dict) or not isinstance(results.get("bindings"), list):
            raise SparqlError(f"{where}: the response is not SPARQL JSON results; check the endpoint URL")
        return result
