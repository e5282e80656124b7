#!/usr/bin/env python3
"""Turn ../shared/data/wikidata into the shipped WikiData-shaped RDF snapshot and the template file.

    python scripts/make_snapshot.py [--src ../shared/data/wikidata] [--out fineked]

Writes fineked/snapshot/wikidata.nt.gz (sorted N-Triples, gzip mtime 0: byte-identical on a rerun)
and fineked/templates/templates.json (cloze / question / paraphrase templates per property; not WikiData data).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

WD = "http://www.wikidata.org/entity/"
WDT = "http://www.wikidata.org/prop/direct/"
RDFS_LABEL = "<http://www.w3.org/2000/01/rdf-schema#label>"
SKOS_ALT = "<http://www.w3.org/2004/02/skos/core#altLabel>"
SCHEMA_DESC = "<http://schema.org/description>"
RDF_TYPE = "<http://www.w3.org/1999/02/22-rdf-syntax-ns#type>"
WIKIBASE = "http://wikiba.se/ontology#"
DATATYPES = {"wikibase-item": "WikibaseItem"}
ID_RE = re.compile(r"^[QP][1-9][0-9]*$")
SITELINKS = f"<{WIKIBASE}sitelinks>"
XSD_INTEGER = "<http://www.w3.org/2001/XMLSchema#integer>"
SITELINKS_CAP = 350  # about the most-linked WikiData item


def sitelinks_proxy(degree: int) -> int:
    """Stand-in popularity for an item: the real sitelink counts are not in ../shared/data.

    An item's degree (facts it takes part in, as subject, object or instance-of class) grows with its
    fame, as sitelinks do; 5 + 3 * degree puts every item of the snapshot above the obscure long tail
    (0-5 sitelinks) of scripts/make_scale_store.py, as the snapshot's LAMA/CoDEx entities are on WikiData.
    """
    return min(SITELINKS_CAP, 5 + 3 * degree)


def sitelinks_triple(qid: str, n: int) -> str:
    return f'{ent(qid)} {SITELINKS} "{n}"^^{XSD_INTEGER} .'

# Templates written for this project where MQuAKE/ParaRel give none (or a wrong one), as data: [X] = subject;
# the object always comes last so a causal LM can be scored on it.
HANDWRITTEN_FILE = Path(__file__).with_name("handwritten_templates.json")


def handwritten() -> dict[str, tuple[str, str, list[str]]]:
    """property id -> (cloze, question, paraphrases)."""
    rows = json.loads(HANDWRITTEN_FILE.read_text(encoding="utf-8"))
    return {pid: (t["cloze"], t["question"], t["paraphrases"]) for pid, t in rows.items()}


def cloze_from_blank(t: str | None) -> str | None:
    """MQuAKE cloze '... __' -> prompt with the object at the end; None if the blank is elsewhere."""
    if not t or not t.rstrip().endswith("__") or t.count("[X]") != 1:
        return None
    return t.rstrip()[:-2].rstrip()


def cloze_from_pattern(t: str) -> str | None:
    """ParaRel pattern '[X] ... [Y] .' -> '[X] ...' when [Y] comes last."""
    t = re.sub(r"\s*[.]?\s*$", "", t.strip())
    if not t.endswith("[Y]") or t.count("[X]") != 1 or t.count("[Y]") != 1:
        return None
    return t[: -len("[Y]")].rstrip(" ,")


def make_templates(props: list[dict], used: set[str]) -> dict:
    out = {}
    hand = handwritten()
    for p in props:
        pid = p["id"]
        if pid == "P31" or pid not in used:
            continue  # instance-of types objects; it is not an edit relation
        if pid in hand:
            cloze, question, paras = hand[pid]
            source = "fineked (handwritten)"
        else:
            cloze, question = cloze_from_blank(p.get("cloze_template")), p.get("question_template")
            paras = []
            source = "MQuAKE cloze/question"
            if cloze is None or not question:
                raise SystemExit(f"property {pid} has no usable template; add it to {HANDWRITTEN_FILE.name}")
        extra = [c for c in (cloze_from_pattern(x) for x in p.get("paraphrases") or []) if c]
        if extra:
            source += " + ParaRel paraphrases"
        seen, plist = {cloze}, []
        for c in list(paras) + extra:
            if c and c not in seen:
                seen.add(c)
                plist.append(c)
        out[pid] = {"cloze": cloze, "question": question, "paraphrases": plist[:6], "source": source}
    return dict(sorted(out.items(), key=lambda kv: int(kv[0][1:])))


def lit(s: str) -> str:
    s = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{s}"@en'


def ent(i: str) -> str:
    return f"<{WD}{i}>"


def triples(src: Path) -> tuple[list[str], set[str], list[dict]]:
    props = [json.loads(x) for x in (src / "properties.jsonl").read_text().splitlines() if x.strip()]
    lines: set[str] = set()
    used: set[str] = set()
    degree: Counter = Counter()
    with gzip.open(src / "facts.tsv.gz", "rt", encoding="utf-8") as fh:
        next(fh)
        for row in fh:
            s, p, o = row.rstrip("\n").split("\t")
            if ID_RE.match(s) and ID_RE.match(p) and ID_RE.match(o):
                lines.add(f"{ent(s)} <{WDT}{p}> {ent(o)} .")
                used.add(p)
                degree[s] += 1
                degree[o] += 1
    with gzip.open(src / "entities.tsv.gz", "rt", encoding="utf-8") as fh:
        next(fh)
        for row in fh:
            parts = row.rstrip("\n").split("\t")  # no quoting in this file: a label may hold a lone '"'
            if len(parts) != 4 or not ID_RE.match(parts[0]):
                continue
            qid, label, aliases, types = parts
            if label:
                lines.add(f"{ent(qid)} {RDFS_LABEL} {lit(label)} .")
            for a in filter(None, aliases.split("|")):
                if a != label:
                    lines.add(f"{ent(qid)} {SKOS_ALT} {lit(a)} .")
            for t in filter(None, types.split("|")):
                if ID_RE.match(t):
                    lines.add(f"{ent(qid)} <{WDT}P31> {ent(t)} .")
                    degree[t] += 1
            degree[qid] += 0  # every labelled item gets a count, as on WikiData
    for q in degree:
        if q.startswith("Q"):
            lines.add(sitelinks_triple(q, sitelinks_proxy(degree[q])))
    for p in props:
        e = ent(p["id"])
        lines.add(f"{e} {RDF_TYPE} <{WIKIBASE}Property> .")
        lines.add(f"{e} <{WIKIBASE}directClaim> <{WDT}{p['id']}> .")  # as on WDQS: links wd:P to wdt:P
        lines.add(f"{e} {RDFS_LABEL} {lit(p['label'])} .")
        if p.get("description"):
            lines.add(f"{e} {SCHEMA_DESC} {lit(p['description'])} .")
        for a in p.get("aliases") or []:
            lines.add(f"{e} {SKOS_ALT} {lit(a)} .")
        lines.add(f"{e} <{WIKIBASE}propertyType> <{WIKIBASE}{DATATYPES.get(p['datatype'], 'WikibaseItem')}> .")
    return sorted(lines), used, props


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parent.parent
    ap.add_argument("--src", type=Path, default=here.parent / "shared" / "data" / "wikidata")
    ap.add_argument("--out", type=Path, default=here / "fineked")
    args = ap.parse_args()
    lines, used, props = triples(args.src)
    nt = args.out / "snapshot" / "wikidata.nt.gz"
    nt.parent.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(lines) + "\n").encode("utf-8")
    with open(nt, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    tpl = args.out / "templates" / "templates.json"
    tpl.parent.mkdir(parents=True, exist_ok=True)
    tpl.write_text(json.dumps(make_templates(props, used), indent=1, ensure_ascii=False) + "\n")
    print(f"{nt}: {len(lines)} triples, {nt.stat().st_size / 1e6:.1f} MB, sha256 {hashlib.sha256(nt.read_bytes()).hexdigest()[:16]}")
    print(f"{tpl}: {len(json.loads(tpl.read_text()))} properties")


if __name__ == "__main__":
    main()
