"""SPARQL over HTTP with SPARQLWrapper: POST + JSON, retries with backoff, an on-disk query cache, safe interpolation.

Queries live in fineked/queries/*.rq as portable SPARQL (explicit PREFIXes, rdfs:label joins, no label
service, no hint:), so the same files run on the local Oxigraph and on query.wikidata.org. Placeholders
are written `{{name}}` and only accept fragments built by `values()`, `iri()` or `literal()`, which
validate ids and escape strings.
"""
from __future__ import annotations

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


class SparqlError(RuntimeError):
    """A SPARQL failure the user can act on; the message is one line naming endpoint, query and the fix."""


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


def value_pairs(var_a: str, var_b: str, pairs: list[tuple[str, str]]) -> Fragment:
    """`VALUES (?a ?b) { (wd:P1 wd:Q1) ... }` from validated id pairs."""
    if not pairs:
        raise SparqlError(f"empty VALUES block for (?{var_a} ?{var_b})")
    body = " ".join(f"({iri(a)} {iri(b)})" for a, b in pairs)
    return Fragment(f"VALUES (?{var_a} ?{var_b}) {{ {body} }}")


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


@dataclass
class SparqlClient:
    endpoint: str
    timeout: float = 60.0
    retries: int = 5
    backoff: float = 1.0
    max_wait: float = 120.0
    cache: Path | None = field(default_factory=lambda: cache_dir() / "sparql")
    user_agent: str = USER_AGENT
    cache_key: str | None = None  # stands in for the URL in cache keys (the local endpoint's port changes per run)
    network_queries: Counter = field(default_factory=Counter)
    cache_hits: Counter = field(default_factory=Counter)
    rows: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if urllib.parse.urlsplit(self.endpoint).scheme not in ("http", "https"):
            raise SparqlError(f"endpoint {self.endpoint!r} is not an http(s) URL; e.g. https://query.wikidata.org/sparql")

    def _cache_path(self, query: str) -> Path | None:
        if self.cache is None:
            return None
        key = hashlib.sha256(f"{self.cache_key or self.endpoint}\n{query}".encode()).hexdigest()
        return self.cache / key[:2] / f"{key}.json"

    def select(self, name: str, query: str) -> list[dict[str, str]]:
        """Run a SELECT; rows map variable -> value string. Cached on disk by endpoint + query text."""
        path = self._cache_path(query)
        rows = read_json_entry(path, lambda v: None if isinstance(v, list) else "not a row list") if path else None
        if rows is not None:
            self.cache_hits[name] += 1
        else:
            rows = _simplify(self._fetch(name, query))
            self.network_queries[name] += 1
            if path is not None:
                write_json_entry(path, rows)
        self.rows[name] += len(rows)
        return rows

    def run(self, name: str, **params: Fragment) -> list[dict[str, str]]:
        return self.select(name, render(name, **params))

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
                result = sw.query().convert()
            except urllib.error.HTTPError as exc:
                if exc.code not in RETRY_STATUS:
                    raise SparqlError(f"{where}: HTTP {exc.code} {exc.reason}; check the endpoint URL and access") from exc
                last = f"HTTP {exc.code}"
                hinted = _retry_after(exc)
                if hinted is not None:
                    wait = hinted
            except (TimeoutError, socket.timeout) as exc:
                last = f"timed out after {self.timeout:g} s"
            except urllib.error.URLError as exc:
                if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                    last = f"timed out after {self.timeout:g} s"
                else:
                    last = f"cannot connect ({exc.reason})"
            except ConnectionError as exc:
                last = f"connection failed ({exc})"
            except SPARQLWrapperException as exc:
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise SparqlError(f"{where}: {msg}; the query was rejected, check fineked/queries/{name}.rq") from exc
            except (json.JSONDecodeError, TypeError) as exc:  # TypeError: JSON, but not an object
                raise SparqlError(f"{where}: the response is not SPARQL JSON (label service or a proxy page?); "
                                  "use plain rdfs:label joins and check the URL") from exc
            else:
                results = result.get("results") if isinstance(result, dict) else None
                if not isinstance(results, dict) or not isinstance(results.get("bindings"), list):
                    raise SparqlError(f"{where}: the response is not SPARQL JSON results; check the endpoint URL")
                return result
            if attempt + 1 < self.retries:
                wait = min(wait, self.max_wait)
                log.warning("%s: %s; retry %d/%d in %.1f s", where, last, attempt + 1, self.retries - 1, wait)
                time.sleep(wait)
        raise SparqlError(f"{where}: {last} after {self.retries} tries; start the endpoint (`fineked endpoint`), "
                          "pass a reachable --endpoint, or raise the timeout")
