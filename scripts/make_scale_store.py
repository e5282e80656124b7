#!/usr/bin/env python3
"""Write a deterministic WikiData-shaped N-Triples stand-in at K times the bundled snapshot's subjects.

    python scripts/make_scale_store.py --scale 50 --out out/scale/wikidata-x50.nt   # [--gzip] [--seed 0]
    oxigraph load --location DB --file out/scale/wikidata-x50.nt --lenient
    oxigraph serve-read-only --location DB --bind 127.0.0.1:7878 --timeout-s 60     # WDQS's limit
    fineked build --endpoint http://127.0.0.1:7878/query --out out/fineked-x50

`python benchmarks/bench_build.py --store-scale 1,10,50` does all of it (and measures the builds).

No machine here reaches WikiData, so the scale is shown on this stand-in:
- **Head:** every triple of fineked/snapshot/wikidata.nt.gz, i.e. the real facts, labels and the
  snapshot's popularity proxy (`wikibase:sitelinks`, scripts/make_snapshot.py), reshaped like the WikiData
  RDF dump: each truthy `wdt:` fact also as a statement (`p:`/`ps:`, `wikibase:rank`, `wikibase:BestRank`);
  a start-time qualifier (`pq:P580`) on one statement in five; one (subject, relation) in twenty gets an
  extra *deprecated* statement whose value is kept out of `wdt:`; labels in German and French next to the
  English ones; literal-valued facts (date of birth P569, population P1082, coordinates P625); and the
  property links `wikibase:claim`, `statementProperty`, `qualifier`, `directClaim`, `propertyType`.
  Qualifier dates, deprecated values, literals and extra labels are synthetic.
- **Tail:** (K - 1) x the snapshot's subjects as synthetic items `wd:Q9000000000+i` (ids far above real
  ones): sitelinks from a power law over 0-5 (0.1 % "regional notables" with 6-60), one label (English for
  65 %, else one of seven other languages: items without an English label) and a second one for 10 %,
  and 1-4 truthy facts under the snapshot's relations, drawn with the snapshot's relation frequencies and
  pointing at the snapshot's objects with their frequencies (obscure people born in big cities). Tail
  facts are truthy triples only, which keeps the 50x store near 45 M triples on a 2-core machine; the
  statement layer of the head puts ranks, qualifiers and deprecated values in front of every query.

Deterministic: the same snapshot, scale and seed give the same bytes (gzip with mtime 0).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WD = "http://www.wikidata.org/entity/"
WDT = "http://www.wikidata.org/prop/direct/"
PROP = "http://www.wikidata.org/prop/"
WB = "http://wikiba.se/ontology#"
RDFS_LABEL = "<http://www.w3.org/2000/01/rdf-schema#label>"
RDF_TYPE = "<http://www.w3.org/1999/02/22-rdf-syntax-ns#type>"
XSD = "http://www.w3.org/2001/XMLSchema#"
TAIL_BASE = 9_000_000_000  # synthetic items are wd:Q9000000000 and up: no real Q-id comes near
CHUNK = 100_000
TAIL_SITELINKS_P = np.array([0.55, 0.20, 0.10, 0.07, 0.05, 0.03])  # 0..5 sitelinks
NOTABLE_P = 0.001
TAIL_FACTS_P = np.array([0.75, 0.12, 0.08, 0.05])  # 1..4 truthy facts
ENGLISH_P, SECOND_LABEL_P = 0.65, 0.10
OTHER_LANGS = ("de", "fr", "es", "it", "nl", "pl", "sv")
SYLLABLES = ("ka", "lo", "min", "ver", "sa", "tor", "el", "an", "bri", "dus", "mar", "ek", "ol", "ren", "ta",
             "vi", "gor", "han", "il", "jus", "ne", "pa", "quin", "ro", "stan", "ul", "wen", "xa", "yor", "ze")
LITERAL_PROPS = {  # literal-valued properties: id -> (label, WikiBase datatype)
    "P569": ("date of birth", "Time"), "P1082": ("population", "Quantity"), "P625": ("coordinate location", "GlobeCoordinate"),
}


def h(text: str) -> int:
    """A stable 64-bit hash (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def ent(q: str) -> str:
    return f"<{WD}{q}>"


def read_snapshot(path: Path) -> tuple[list[str], list[tuple[str, str, str]]]:
    """All snapshot lines, and its wd:Q wdt:P wd:Q facts as (s, p, o) ids."""
    lines, facts = [], []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            lines.append(line)
            parts = line.split(" ", 3)
            if parts[1].startswith(f"<{WDT}") and parts[2].startswith(f"<{WD}Q"):
                facts.append((parts[0][len(WD) + 1:-1], parts[1][len(WDT) + 1:-1], parts[2][len(WD) + 1:-1]))
    return lines, facts


def head(lines: list[str], facts: list[tuple[str, str, str]]) -> tuple[list[str], int]:
    """The snapshot in the WikiData dump's shape; returns its lines and its number of subjects."""
    out = list(lines)
    objects_of: dict[str, list[str]] = defaultdict(list)
    for s, p, o in facts:
        objects_of[p].append(o)
    subjects = {s for s, p, _ in facts if p != "P31"}
    seen_sp: set[tuple[str, str]] = set()
    for s, p, o in facts:
        st = f"<{WD}statement/{s}-{p}-{h(f'{s}/{p}/{o}') & 0xFFFFFFFF:08x}>"
        out += [f"{ent(s)} <{PROP}{p}> {st} .", f"{st} <{PROP}statement/{p}> {ent(o)} .",
                f"{st} <{WB}rank> <{WB}NormalRank> .", f"{st} {RDF_TYPE} <{WB}BestRank> ."]
        if h(f"q/{s}/{p}/{o}") % 5 == 0:
            year = 1900 + h(f"y/{s}/{p}/{o}") % 120
            out.append(f'{st} <{PROP}qualifier/P580> "{year}-01-01T00:00:00Z"^^<{XSD}dateTime> .')
        if (s, p) not in seen_sp and h(f"d/{s}/{p}") % 20 == 0:
            cands = objects_of[p]
            wrong = cands[h(f"w/{s}/{p}") % len(cands)]
            if wrong != o:  # a deprecated value: in p:/ps: with DeprecatedRank, never in wdt:
                dst = f"<{WD}statement/{s}-{p}-dep>"
                out += [f"{ent(s)} <{PROP}{p}> {dst} .", f"{dst} <{PROP}statement/{p}> {ent(wrong)} .",
                        f"{dst} <{WB}rank> <{WB}DeprecatedRank> ."]
        seen_sp.add((s, p))
        if p == "P19" and h(f"b/{s}") % 2 == 0:
            out.append(f'{ent(s)} <{WDT}P569> "{1800 + h(f"by/{s}") % 200}-06-01T00:00:00Z"^^<{XSD}dateTime> .')
        if p in ("P17", "P131") and h(f"pop/{s}") % 3 == 0:
            out.append(f'{ent(s)} <{WDT}P1082> "{1000 + h(f"pn/{s}") % 5_000_000}"^^<{XSD}decimal> .')
            x, y = h(f"x/{s}") % 36000 / 100 - 180, h(f"y/{s}") % 18000 / 100 - 90
            out.append(f'{ent(s)} <{WDT}P625> "Point({x:.2f} {y:.2f})"^^<http://www.opengis.net/ont/geosparql#wktLiteral> .')
    # labels in other languages: names are often spelled the same across languages on WikiData
    for line in lines:
        if f" {RDFS_LABEL} " in line and line.endswith('"@en .'):
            subj = line.split(" ", 1)[0]
            if h(f"de/{subj}") % 2 == 0:
                out.append(line[:-len('@en .')] + "@de .")
            if h(f"fr/{subj}") % 3 == 0:
                out.append(line[:-len('@en .')] + "@fr .")
    props = sorted({p for _, p, _ in facts} | set(LITERAL_PROPS), key=lambda p: int(p[1:]))
    for p in props:
        e = ent(p)
        out += [f"{e} <{WB}claim> <{PROP}{p}> .", f"{e} <{WB}statementProperty> <{PROP}statement/{p}> .",
                f"{e} <{WB}qualifier> <{PROP}qualifier/{p}> ."]
        if p in LITERAL_PROPS:
            label, dtype = LITERAL_PROPS[p]
            out += [f"{e} {RDF_TYPE} <{WB}Property> .", f'{e} {RDFS_LABEL} "{label}"@en .',
                    f"{e} <{WB}directClaim> <{WDT}{p}> .", f"{e} <{WB}propertyType> <{WB}{dtype}> ."]
    return out, len(subjects)


def tail_chunk(rng: np.random.Generator, start: int, n: int, rel_ids: list[str], rel_cum: np.ndarray,
               objects_of: dict[str, list[str]]) -> list[str]:
    """n synthetic long-tail items, ids TAIL_BASE + start ..."""
    links = rng.choice(6, size=n, p=TAIL_SITELINKS_P)
    notable = rng.random(n) < NOTABLE_P
    links[notable] = np.minimum(60, (6 * rng.random(int(notable.sum())) ** (-2 / 3)).astype(int))
    english = rng.random(n) < ENGLISH_P
    other = rng.integers(0, len(OTHER_LANGS), size=n)
    second = rng.random(n) < SECOND_LABEL_P
    syl = rng.integers(0, len(SYLLABLES), size=(n, 5))
    n_facts = 1 + rng.choice(4, size=n, p=TAIL_FACTS_P)
    rel_draw = np.searchsorted(rel_cum, rng.random((n, 4)), side="right")
    obj_draw = rng.random((n, 4))
    out = []
    for i in range(n):
        e = f"<{WD}Q{TAIL_BASE + start + i}>"
        a, b, c, d, f = (SYLLABLES[k] for k in syl[i])
        name = f"{(a + b).capitalize()} {(c + d + f).capitalize()}"
        out.append(f'{e} <{WB}sitelinks> "{links[i]}"^^<{XSD}integer> .')
        lang = "en" if english[i] else OTHER_LANGS[other[i]]
        out.append(f'{e} {RDFS_LABEL} "{name}"@{lang} .')
        if second[i]:
            lang2 = OTHER_LANGS[(other[i] + 1) % len(OTHER_LANGS)]
            out.append(f'{e} {RDFS_LABEL} "{name}"@{lang2} .')
        done = set()
        for j in range(n_facts[i]):
            p = rel_ids[min(rel_draw[i, j], len(rel_ids) - 1)]
            if p in done:
                continue
            done.add(p)
            objs = objects_of[p]
            out.append(f"{e} <{WDT}{p}> <{WD}{objs[int(obj_draw[i, j] * len(objs))]}> .")
    return out


def write_store(out: Path, scale: int, seed: int = 0, snapshot: Path | None = None, compress: bool = False,
                quiet: bool = False) -> dict:
    """Write the stand-in; returns {triples, subjects, tail_items, seconds, path}."""
    t0 = time.perf_counter()
    snapshot = snapshot or REPO / "fineked" / "snapshot" / "wikidata.nt.gz"
    lines, facts = read_snapshot(snapshot)
    head_lines, n_subjects = head(lines, facts)
    pool_facts = [(s, p, o) for s, p, o in facts if p != "P31"]
    freq = Counter(p for _, p, _ in pool_facts)
    rel_ids = sorted(freq, key=lambda p: int(p[1:]))
    rel_cum = np.cumsum([freq[p] for p in rel_ids]) / len(pool_facts)
    objects_of: dict[str, list[str]] = defaultdict(list)
    for _, p, o in pool_facts:
        objects_of[p].append(o)  # with repeats: tail objects follow the snapshot's object frequencies
    n_tail = (scale - 1) * n_subjects
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".part")
    triples = 0
    with open(tmp, "wb") as raw:
        fh = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1) if compress else raw
        fh.write(("\n".join(head_lines) + "\n").encode("utf-8"))
        triples += len(head_lines)
        for k, start in enumerate(range(0, n_tail, CHUNK)):
            rng = np.random.default_rng([seed, k])
            chunk = tail_chunk(rng, start, min(CHUNK, n_tail - start), rel_ids, rel_cum, objects_of)
            fh.write(("\n".join(chunk) + "\n").encode("utf-8"))
            triples += len(chunk)
            if not quiet and k % 20 == 0:
                print(f"  tail items {min(start + CHUNK, n_tail):,}/{n_tail:,}, {triples:,} triples", file=sys.stderr, flush=True)
        if compress:
            fh.close()
    tmp.replace(out)
    return {"path": str(out), "triples": triples, "subjects": n_subjects, "tail_items": n_tail,
            "bytes": out.stat().st_size, "seconds": time.perf_counter() - t0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, required=True, help="K: items with facts = K x the snapshot's subjects")
    ap.add_argument("--out", type=Path, required=True, help="output .nt (or .nt.gz with --gzip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gzip", action="store_true", help="gzip the output (level 1; slower to write and load)")
    args = ap.parse_args()
    if args.scale < 1:
        ap.error("--scale must be 1 or more")
    info = write_store(args.out, args.scale, args.seed, compress=args.gzip)
    args.out.with_suffix(".json").write_text(json.dumps(info, indent=1))  # read by benchmarks/bench_build.py
    print(f"{info['path']}: {info['triples']:,} triples ({info['subjects']:,} snapshot subjects + "
          f"{info['tail_items']:,} tail items), {info['bytes'] / 1e6:,.0f} MB, {info['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
