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

# Templates written for this project where MQuAKE/ParaRel give none (or a wrong one). [X] = subject;
# the object always comes last so a causal LM can be scored on it. Tuple: (cloze, question, paraphrases).
HANDWRITTEN: dict[str, tuple[str, str, list[str]]] = {
    "P25": ("The mother of [X] is", "Who is the mother of [X]?", ["[X]'s mother is", "[X] is the child of the mother"]),
    "P39": ("[X] held the position of", "Which position did [X] hold?", ["[X] has the position of", "[X] served as"]),
    "P47": ("[X] shares a border with", "Which place does [X] share a border with?", ["[X] borders", "[X] shares its border with"]),
    "P54": ("[X] is a member of the sports team", "Which sports team is [X] a member of?", ["[X] plays for", "[X] played for the team"]),
    "P57": ("[X] was directed by", "Who directed [X]?", ["The director of [X] is", "[X] is a film directed by"]),
    "P59": ("[X] is located in the constellation", "Which constellation is [X] in?", ["[X] can be found in the constellation"]),
    "P69": ("The university where [X] was educated is", "Which university was [X] educated at?", ["[X] studied at", "[X] was educated at"]),
    "P84": ("The architect of [X] is", "Who was the architect of [X]?", ["[X] was designed by the architect"]),
    "P101": ("[X] works in the field of", "What is the field of work of [X]?", ["[X] specializes in", "The domain of activity of [X] is"]),
    "P102": ("[X] is a member of the political party", "Which political party is [X] a member of?", ["[X] belongs to the party", "[X] was a member of the political party"]),
    "P103": ("The native language of [X] is", "What is the native language of [X]?", ["The mother tongue of [X] is", "[X] is a native speaker of"]),
    "P106": ("The occupation of [X] is", "What is the occupation of [X]?", ["[X] works as a", "By profession, [X] is a"]),
    "P113": ("[X] has a hub at the airport", "Which airport is a hub of [X]?", ["A hub of the airline [X] is"]),
    "P114": ("[X] is a member of the airline alliance", "Which airline alliance is [X] part of?", ["[X] belongs to the alliance"]),
    "P119": ("[X] is buried in", "Where is [X] buried?", ["The place of burial of [X] is", "[X] was laid to rest in"]),
    "P123": ("[X] was published by", "Who published [X]?", ["The publisher of [X] is"]),
    "P135": ("[X] is associated with the movement", "Which movement is [X] associated with?", ["[X] belongs to the artistic movement", "[X] was part of the movement"]),
    "P136": ("The genre of [X] is", "What is the genre of [X]?", ["[X] is known for the genre", "[X] belongs to the genre"]),
    "P138": ("[X] is named after", "Who or what is [X] named after?", ["[X] was named after", "[X] is named for"]),
    "P149": ("The architectural style of [X] is", "What is the architectural style of [X]?", ["[X] is built in the style of"]),
    "P150": ("[X] contains the administrative territorial entity", "Which administrative entity does [X] contain?", ["An administrative division of [X] is"]),
    "P155": ("[X] follows", "What does [X] follow?", ["[X] comes after", "The predecessor of [X] is"]),
    "P161": ("[X] features the cast member", "Who is a cast member of [X]?", ["One of the actors in [X] is", "[X] stars"]),
    "P166": ("[X] received the award", "Which award did [X] receive?", ["[X] was awarded the", "[X] won the"]),
    "P172": ("The ethnic group of [X] is", "What is the ethnic group of [X]?", ["[X] belongs to the ethnic group", "[X] is ethnically"]),
    "P177": ("[X] crosses", "What does [X] cross?", ["[X] spans"]),
    "P194": ("The legislative body of [X] is", "What is the legislative body of [X]?", ["The legislature of [X] is"]),
    "P205": ("[X] has a basin in the country", "Which country is the basin of [X] in?", ["The basin of [X] lies in"]),
    "P206": ("[X] is located next to the body of water", "Which body of water is [X] next to?", ["[X] lies on the shore of", "[X] is situated on"]),
    "P264": ("[X] is signed to the record label", "Which record label is [X] signed to?", ["[X] releases music on the label", "The record label of [X] is"]),
    "P279": ("[X] is a subclass of", "What is [X] a subclass of?", ["[X] is a type of", "[X] is a kind of"]),
    "P361": ("[X] is part of", "What is [X] part of?", ["[X] is a part of", "[X] belongs to"]),
    "P366": ("[X] is used for", "What is [X] used for?", ["The use of [X] is"]),
    "P410": ("[X] holds the military rank of", "What military rank does [X] hold?", ["The rank of [X] is"]),
    "P412": ("The voice type of [X] is", "What is the voice type of [X]?", ["[X] sings as a"]),
    "P449": ("The original broadcaster of [X] is", "Who is the original broadcaster of [X]?", ["[X] was originally aired on", "[X] premiered on"]),
    "P451": ("The unmarried partner of [X] is", "Who is the partner of [X]?", ["[X] is in a relationship with", "[X]'s partner is"]),
    "P452": ("[X] operates in the industry of", "Which industry does [X] operate in?", ["The industry of [X] is"]),
    "P457": ("The foundational text of [X] is", "What is the foundational text of [X]?", ["[X] is founded on the text"]),
    "P466": ("[X] is occupied by", "Who occupies [X]?", ["The occupant of [X] is"]),
    "P509": ("The cause of death of [X] was", "What was the cause of death of [X]?", ["[X] died of", "[X] passed away from"]),
    "P527": ("[X] has the part", "What is a part of [X]?", ["[X] consists of", "[X] includes"]),
    "P530": ("[X] has diplomatic relations with", "Which country does [X] have diplomatic relations with?", ["[X] maintains diplomatic relations with"]),
    "P551": ("[X] resides in", "Where does [X] reside?", ["The residence of [X] is", "[X] lives in"]),
    "P641": ("[X] is associated with the sport of", "Which sport is [X] associated with?", ["[X] plays the sport of", "The sport of [X] is"]),
    "P737": ("[X] was influenced by", "Who influenced [X]?", ["[X] drew inspiration from", "An influence on [X] was"]),
    "P749": ("The parent organization of [X] is", "What is the parent organization of [X]?", ["[X] is a subsidiary of", "[X] is owned by the parent company"]),
    "P780": ("A symptom of [X] is", "What is a symptom of [X]?", ["[X] typically causes"]),
    "P840": ("[X] is set in", "Where is [X] set?", ["The story of [X] takes place in", "The narrative location of [X] is"]),
    "P921": ("The main subject of [X] is", "What is the main subject of [X]?", ["[X] is about"]),
    "P1001": ("[X] applies to the jurisdiction of", "Which jurisdiction does [X] apply to?", ["[X] is a legal term in", "[X] has authority over"]),
    "P1050": ("[X] suffers from", "Which medical condition does [X] have?", ["[X] was diagnosed with", "The medical condition of [X] is"]),
    "P1056": ("[X] produces", "What does [X] produce?", ["A product of [X] is"]),
    "P1303": ("[X] plays the instrument", "Which instrument does [X] play?", ["[X] plays the", "[X] is known for playing the"]),
    "P1376": ("[X] is the capital of", "What is [X] the capital of?", ["[X] is the capital city of", "[X] serves as the capital of"]),
    "P1454": ("The legal form of [X] is", "What is the legal form of [X]?", ["[X] is organised as a"]),
    "P1923": ("A participating team of [X] is", "Which team participated in [X]?", ["[X] featured the team"]),
    "P1995": ("The health specialty of [X] is", "Which health specialty deals with [X]?", ["[X] is treated in the field of"]),
    "P2094": ("[X] competes in the class", "Which competition class does [X] compete in?", ["The competition class of [X] is"]),
    "P2176": ("[X] is treated with", "Which drug is used to treat [X]?", ["A treatment for [X] is"]),
    "P2283": ("[X] uses", "What does [X] use?", ["[X] makes use of"]),
    "P2348": ("[X] belongs to the time period", "Which time period does [X] belong to?", ["[X] dates from the", "The period of [X] is"]),
    "P2578": ("[X] is the study of", "What is [X] the study of?", ["[X] studies"]),
    "P3095": ("[X] is practiced by", "Who practices [X]?", ["[X] is done by"]),
    "P3373": ("The sibling of [X] is", "Who is the sibling of [X]?", ["[X]'s sibling is", "[X] is the brother or sister of"]),
    "P4552": ("[X] is part of the mountain range", "Which mountain range is [X] part of?", ["[X] lies in the mountain range", "[X] belongs to the range"]),
}


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
    for p in props:
        pid = p["id"]
        if pid == "P31" or pid not in used:
            continue  # instance-of types objects; it is not an edit relation
        if pid in HANDWRITTEN:
            cloze, question, paras = HANDWRITTEN[pid]
            source = "fineked (handwritten)"
        else:
            cloze, question = cloze_from_blank(p.get("cloze_template")), p.get("question_template")
            paras = []
            source = "MQuAKE cloze/question"
            if cloze is None or not question:
                raise SystemExit(f"property {pid} has no usable template; add it to HANDWRITTEN")
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
