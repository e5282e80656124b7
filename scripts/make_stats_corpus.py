"""Build editors/data/stats_corpus.txt.gz, the offline text corpus for layer statistics (C = E[k kᵀ]).

Source: ../shared/data/wikidata (real WikiData facts, CC0; see that folder's PROVENANCE.md). Each line is one
sample: a short paragraph about one subject, its facts rendered with the property templates of properties.jsonl
(cloze templates and ParaRel/MQuAKE paraphrases), its "instance of" types, plus one line per property with its
WikiData label and description. Deterministic for a given seed.

    python scripts/make_stats_corpus.py [--data ../shared/data/wikidata] [--subjects 20000] [--seed 0]
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "editors" / "data" / "stats_corpus.txt.gz"


def render(template: str, subject: str, obj: str) -> str:
    s = template.replace("[X]", subject).replace("[Y]", obj).replace("__", obj).replace(" .", ".").strip()
    return s if s.endswith((".", "?", "!")) else s + "."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "wikidata")
    ap.add_argument("--subjects", type=int, default=20000, help="paragraphs (one per subject)")
    ap.add_argument("--max-facts", type=int, default=8, help="facts per paragraph")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    rng = random.Random(args.seed)

    props = {}
    for line in (args.data / "properties.jsonl").read_text().splitlines():
        p = json.loads(line)
        templates = [t for t in [p.get("cloze_template"), *(p.get("paraphrases") or [])] if t]
        templates.append(f"[X]'s {p['label']} is [Y].")  # every property gets at least one template
        props[p["id"]] = (p, templates)
    labels, types = {}, {}
    with gzip.open(args.data / "entities.tsv.gz", "rt", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            labels[row["id"]] = row["label"]
            types[row["id"]] = [t for t in (row["instance_of"] or "").split("|") if t]
    facts = defaultdict(list)
    with gzip.open(args.data / "facts.tsv.gz", "rt", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            if row["property"] in props and row["subject"] in labels and row["object"] in labels:
                facts[row["subject"]].append((row["property"], row["object"]))

    subjects = sorted(s for s, fs in facts.items() if len({p for p, _ in fs}) >= 2)
    rng.shuffle(subjects)
    lines = [f"{p['label']}: {p['description']}." for p, _ in props.values() if p.get("description")]
    for s in subjects[:args.subjects]:
        name = labels[s]
        sents = [f"{name} is a {labels[t]}." for t in types.get(s, [])[:2] if t in labels]
        fs = facts[s][:]
        rng.shuffle(fs)
        for pid, obj in fs[:args.max_facts]:
            sents.append(render(rng.choice(props[pid][1]), name, labels[obj]))
        lines.append(" ".join(sents))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(args.out, "wb", mtime=0) as fh:  # mtime=0: byte-identical rebuilds
        fh.write(("\n".join(lines) + "\n").encode("utf-8"))
    print(f"wrote {args.out} ({len(lines)} lines, {args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
