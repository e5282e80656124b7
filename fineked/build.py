"""The FINE-KED builder (METHOD.md §2, steps 1-8): SPARQL -> edit cases with levelled fine-grained facts.

Stages: relations -> subjects -> relation objects -> subject facts (VALUES batches) -> neighbours ->
similarity -> assemble -> write. Every random choice draws from a Random seeded by (seed, purpose, key),
so the output does not depend on iteration order or on Python's hash seed.
"""
from __future__ import annotations

import hashlib
import logging
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from fineked.records import LEVELS, record_from_dict
from fineked.similarity import DEFAULT_EMBEDDER, RelationText, level_of, relation_similarity, tertile_thresholds
from fineked.sparql import SparqlClient, SparqlError, integer, value_pairs, values
from fineked.templates import RelationTemplates, load_templates

log = logging.getLogger(__name__)
WD = "http://www.wikidata.org/entity/"


class BuildError(SparqlError):
    """Bad build input (unknown property, empty result); shown by the CLI as one line."""


@dataclass
class BuildConfig:
    max_cases: int = 4000
    seed: int = 0
    embedder: str = DEFAULT_EMBEDDER
    relations: tuple[str, ...] | None = None  # None: every property in the template file
    min_properties: int = 3
    n_paraphrases: int = 2
    n_neighbours: int = 5
    n_constraints: int = 2  # facts held out of fine_grained per case, for ROME-C/MEMIT-C
    krd_samples: int = 20000
    batch_size: int = 200
    thresholds: tuple[float, float] | None = None  # None: tertiles of this build's fine-grained similarities
    quiet: bool = False


@dataclass
class Stage:
    name: str
    seconds: float = 0.0
    queries: int = 0
    cache_hits: int = 0
    rows: int = 0
    items: int = 0  # what the stage produced (subjects fetched, cases, ...)


@dataclass
class BuildResult:
    eval_records: list[dict]
    krd_records: list[dict]
    thresholds: tuple[float, float]
    relations: dict[str, RelationText]
    stages: list[Stage] = field(default_factory=list)
    results_fingerprint: str = ""


def qid(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


def pid_key(p: str) -> int:
    return int(p[1:])


def _rng(seed: int, purpose: str, key: str) -> random.Random:
    return random.Random(f"{seed}/{purpose}/{key}")  # str seeds hash with sha512: stable across runs


class _StageTimer:
    def __init__(self, client: SparqlClient, stages: list[Stage], name: str):
        self.client, self.stage = client, Stage(name)
        stages.append(self.stage)

    def __enter__(self) -> Stage:
        self.t0 = time.perf_counter()
        self.q0 = sum(self.client.network_queries.values())
        self.h0 = sum(self.client.cache_hits.values())
        self.r0 = sum(self.client.rows.values())
        return self.stage

    def __exit__(self, *exc) -> None:
        s = self.stage
        s.seconds = time.perf_counter() - self.t0
        s.queries = sum(self.client.network_queries.values()) - self.q0
        s.cache_hits = sum(self.client.cache_hits.values()) - self.h0
        s.rows = sum(self.client.rows.values()) - self.r0


# --- stage helpers -------------------------------------------------------------------------------

def fetch_relations(client: SparqlClient, pool: list[str]) -> dict[str, RelationText]:
    rows = client.run("relations", properties=values("prop", pool))
    label, desc, aliases = {}, {}, defaultdict(set)
    for r in rows:
        p = qid(r["prop"])
        label[p] = r["label"]
        if r.get("description"):
            desc[p] = r["description"]
        if r.get("alias"):
            aliases[p].add(r["alias"])
    missing = [p for p in pool if p not in label]
    if missing:
        raise BuildError(f"unknown property {missing[0]}: the endpoint has no English label for it "
                         f"({len(missing)} missing); drop it from --relations")
    return {p: RelationText(p, label[p], desc.get(p, ""), tuple(sorted(aliases[p]))) for p in pool}


def fetch_objects(client: SparqlClient, pool: list[str], batch: int, quiet: bool) -> dict[str, dict[str, tuple[str, frozenset]]]:
    """relation -> object id -> (label, instance-of classes)."""
    labels: dict[str, dict[str, str]] = defaultdict(dict)
    types: dict[tuple[str, str], set] = defaultdict(set)
    chunks = [pool[i:i + batch] for i in range(0, len(pool), batch)]
    for chunk in tqdm(chunks, desc="relation objects", unit="batch", disable=quiet):
        for r in client.run("relation_objects", properties=values("prop", chunk)):
            p, o = qid(r["prop"]), qid(r["o"])
            labels[p][o] = r["oLabel"]
            if r.get("type"):
                types[(p, o)].add(qid(r["type"]))
    return {p: {o: (lab, frozenset(types[(p, o)])) for o, lab in objs.items()} for p, objs in labels.items()}


def fetch_subject_facts(client: SparqlClient, subjects: list[str], pool: set[str]) -> dict[str, tuple[str, dict[str, dict[str, str]]]]:
    """One VALUES query for a batch: subject -> (label, relation -> object id -> object label)."""
    out: dict[str, tuple[str, dict]] = {}
    for r in client.run("subject_facts", subjects=values("s", subjects)):
        p = qid(r["prop"])
        if p not in pool:
            continue
        s = qid(r["s"])
        if s not in out:
            out[s] = (r["sLabel"], defaultdict(dict))
        out[s][1][p][qid(r["o"])] = r["oLabel"]
    return out


def choose_new_object(rng: random.Random, objects: dict[str, tuple[str, frozenset]], true_ids: set[str],
                      true_label: str, true_types: frozenset) -> tuple[str, str] | None:
    """o*: an object the relation takes elsewhere, preferring o's class, never a value (s, r) already has."""
    cands = sorted(o for o, (lab, _) in objects.items() if o not in true_ids and lab != true_label)
    if not cands:
        return None
    same = [o for o in cands if objects[o][1] & true_types]
    o = rng.choice(same or cands)
    return o, objects[o][0]


def sibling_facts(rng: random.Random, facts: dict[str, dict[str, str]], skip_relation: str,
                  avoid_ids: set[str], avoid_labels: set[str]) -> list[tuple[str, str, str]]:
    """One (r', o', label) per other relation, o' never the new object."""
    out = []
    for rp in sorted(facts, key=pid_key):
        if rp == skip_relation:
            continue
        objs = sorted(o for o, lab in facts[rp].items() if o not in avoid_ids and lab not in avoid_labels)
        if objs:
            o = rng.choice(objs)
            out.append((rp, o, facts[rp][o]))
    return out


# --- the build -----------------------------------------------------------------------------------

def build(client: SparqlClient, cfg: BuildConfig) -> BuildResult:
    templates = load_templates()
    pool = sorted(cfg.relations or templates, key=pid_key)
    for p in pool:
        if p not in templates:
            raise BuildError(f"unknown property {p}: it has no template in fineked/templates/templates.json "
                             f"(known: {', '.join(sorted(templates, key=pid_key)[:8])}, ...)")
    pool_set = set(pool)
    stages: list[Stage] = []

    with _StageTimer(client, stages, "1 relation pool") as st:
        relations = fetch_relations(client, pool)
        st.items = len(relations)

    with _StageTimer(client, stages, "2 subjects") as st:
        rows = client.run("subjects", properties=values("prop", pool), min_properties=integer(2))
        n_props = {qid(r["s"]): int(r["n"]) for r in rows}
        if not n_props:
            raise BuildError("empty result: no subject has facts under 2 pool properties; check --relations/--endpoint")
        eval_cands = sorted((s for s, n in n_props.items() if n >= cfg.min_properties), key=pid_key)
        _rng(cfg.seed, "subjects", "eval").shuffle(eval_cands)
        st.items = len(n_props)

    with _StageTimer(client, stages, "3 relation objects") as st:
        objects = fetch_objects(client, pool, 8, cfg.quiet)
        st.items = sum(len(v) for v in objects.values())

    fetched: dict[str, tuple[str, dict]] = {}
    drafts: list[dict] = []
    per_relation: Counter = Counter()
    with _StageTimer(client, stages, "4 eval subject facts (VALUES batches)") as st:
        bar = tqdm(total=cfg.max_cases, desc="edit cases", unit="case", disable=cfg.quiet)
        for i in range(0, len(eval_cands), cfg.batch_size):
            if len(drafts) >= cfg.max_cases:
                break
            batch = eval_cands[i:i + cfg.batch_size]
            fetched.update(fetch_subject_facts(client, batch, pool_set))
            for s in batch:
                if len(drafts) >= cfg.max_cases:
                    break
                if s in fetched:
                    d = draft_case(s, *fetched[s], templates, objects, per_relation, cfg)
                    if d is not None:
                        drafts.append(d)
                        per_relation[d["relation_id"]] += 1
                        bar.update(1)
        bar.close()
        st.items = len(drafts)
    if not drafts:
        raise BuildError("empty result: no subject yields an edit case; relax --relations or --min-properties")

    with _StageTimer(client, stages, "5 neighbours (VALUES batches)") as st:
        add_neighbours(client, drafts, templates, cfg)
        st.items = sum(len(d["neighborhood_prompts"]) for d in drafts)

    with _StageTimer(client, stages, "6 relation similarity") as st:
        sims = relation_similarity([relations[p] for p in pool], cfg.embedder)
        fine_sims = [sims[(d["relation_id"], f["relation_id"])] for d in drafts for f in d["fine_grained"]]
        thresholds = cfg.thresholds or tertile_thresholds(fine_sims)
        st.items = len(pool) ** 2

    eval_subjects = {d["subject_id"] for d in drafts}
    with _StageTimer(client, stages, "7 krd_train subject facts (VALUES batches)") as st:
        krd_cands = sorted((s for s in n_props if s not in eval_subjects), key=pid_key)
        _rng(cfg.seed, "subjects", "krd").shuffle(krd_cands)
        krd = []
        bar = tqdm(total=cfg.krd_samples, desc="krd_train samples", unit="fact", disable=cfg.quiet)
        for i in range(0, len(krd_cands), cfg.batch_size):
            if len(krd) >= cfg.krd_samples:
                break
            batch = krd_cands[i:i + cfg.batch_size]
            need = [s for s in batch if s not in fetched]
            if need:
                fetched.update(fetch_subject_facts(client, need, pool_set))
            for s in batch:
                if s in fetched and len(krd) < cfg.krd_samples:
                    new = krd_records(s, *fetched[s], templates, objects, cfg)[: cfg.krd_samples - len(krd)]
                    krd.extend(new)
                    bar.update(len(new))
        bar.close()
        st.items = len(krd)

    with _StageTimer(client, stages, "8 assemble + validate") as st:
        eval_records = [finish(d, sims, thresholds) for d in drafts]
        krd_out = [finish(d, sims, thresholds) for d in krd]
        for rec in eval_records + krd_out:
            record_from_dict(rec)  # fail loudly, with the case id, before anything is written
        overlap = eval_subjects & {d["subject_id"] for d in krd_out}
        assert not overlap, f"krd_train shares subjects with the evaluation: {sorted(overlap)[:3]}"
        st.items = len(eval_records) + len(krd_out)

    digest = hashlib.sha256()
    for rec in eval_records + krd_out:
        digest.update(repr(sorted(rec.items())).encode())
    return BuildResult(eval_records, krd_out, thresholds, relations, stages, "sha256:" + digest.hexdigest())


def draft_case(s: str, label: str, facts: dict[str, dict[str, str]], templates: dict[str, RelationTemplates],
               objects: dict, per_relation: Counter, cfg: BuildConfig) -> dict | None:
    rng = _rng(cfg.seed, "case", s)
    # Edit relations: single-valued for this subject. The rarest so far wins, so cases spread over relations.
    eligible = sorted((r for r, objs in facts.items() if len(objs) == 1 and r in objects), key=pid_key)
    rng.shuffle(eligible)
    eligible.sort(key=lambda r: per_relation[r])
    for r in eligible:
        (o, o_label), = facts[r].items()
        new = choose_new_object(rng, objects[r], {o}, o_label, objects[r].get(o, ("", frozenset()))[1])
        if new is None:
            continue
        tpl = templates[r]
        prompt = tpl.prompt(label)
        paraphrases = tpl.paraphrase_prompts(label, cfg.n_paraphrases)
        taken = {prompt, *paraphrases}
        siblings = []
        for rp, op, op_label in sibling_facts(rng, facts, r, {new[0]}, {new[1]}):
            p = templates[rp].prompt(label)
            if p not in taken:  # two relations can share a cloze ("[X] is located in")
                taken.add(p)
                siblings.append({"relation_id": rp, "prompt": p, "target": {"str": op_label, "id": op}})
        # Hold a few siblings out of the evaluation: ROME-C/MEMIT-C may preserve them, never the scored ones.
        n_hold = min(cfg.n_constraints, len(siblings) // 2)
        held = set(rng.sample(range(len(siblings)), n_hold)) if n_hold else set()
        fine = [f for i, f in enumerate(siblings) if i not in held]
        if not fine:
            continue
        return {
            "case_id": f"{s}-{r}", "subject": label, "subject_id": s, "relation_id": r, "prompt": prompt,
            "target_true": {"str": o_label, "id": o}, "target_new": {"str": new[1], "id": new[0]},
            "paraphrase_prompts": paraphrases, "neighborhood_prompts": [],
            "fine_grained": fine, "constraint_facts": [siblings[i] for i in sorted(held)], "source": "fineked",
        }
    return None


def krd_records(s: str, label: str, facts: dict[str, dict[str, str]], templates: dict[str, RelationTemplates],
                objects: dict, cfg: BuildConfig) -> list[dict]:
    """One record per (s, r, o) of a krd_train subject, every sibling fact in fine_grained."""
    out = []
    for r in sorted(facts, key=pid_key):
        if r not in objects:
            continue
        rng = _rng(cfg.seed, "krd", f"{s}/{r}")
        o = rng.choice(sorted(facts[r]))
        o_label = facts[r][o]
        new = choose_new_object(rng, objects[r], set(facts[r]), o_label, objects[r].get(o, ("", frozenset()))[1])
        if new is None:
            continue
        prompt = templates[r].prompt(label)
        sib, taken = [], {prompt}
        for rp, op, op_label in sibling_facts(rng, facts, r, {new[0]}, {new[1]}):
            p = templates[rp].prompt(label)
            if p not in taken:
                taken.add(p)
                sib.append({"relation_id": rp, "prompt": p, "target": {"str": op_label, "id": op}})
        if not sib:
            continue
        out.append({
            "case_id": f"krd-{s}-{r}", "subject": label, "subject_id": s, "relation_id": r, "prompt": prompt,
            "target_true": {"str": o_label, "id": o}, "target_new": {"str": new[1], "id": new[0]},
            "paraphrase_prompts": templates[r].paraphrase_prompts(label, cfg.n_paraphrases),
            "neighborhood_prompts": [], "fine_grained": sib, "constraint_facts": [], "source": "fineked-krd",
        })
    return out


def add_neighbours(client: SparqlClient, drafts: list[dict], templates: dict[str, RelationTemplates],
                   cfg: BuildConfig) -> None:
    pairs = sorted({(d["relation_id"], d["target_true"]["id"]) for d in drafts}, key=lambda x: (pid_key(x[0]), pid_key(x[1])))
    holders: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    chunks = [pairs[i:i + 100] for i in range(0, len(pairs), 100)]
    for chunk in tqdm(chunks, desc="neighbours", unit="batch", disable=cfg.quiet):
        for r in client.run("neighbours", pairs=value_pairs("prop", "o", chunk)):
            holders[(qid(r["prop"]), qid(r["o"]))][qid(r["s"])] = r["sLabel"]
    for d in drafts:
        key = (d["relation_id"], d["target_true"]["id"])
        others = sorted((s for s, lab in holders[key].items() if s != d["subject_id"] and lab != d["subject"]), key=pid_key)
        rng = _rng(cfg.seed, "neighbours", d["case_id"])
        chosen = rng.sample(others, min(cfg.n_neighbours, len(others)))
        tpl = templates[d["relation_id"]]
        d["neighborhood_prompts"] = list(dict.fromkeys(tpl.prompt(holders[key][s]) for s in chosen))


def finish(d: dict, sims: dict[tuple[str, str], float], thresholds: tuple[float, float]) -> dict:
    out = dict(d)
    out["fine_grained"] = []
    for f in d["fine_grained"]:
        sim = sims[(d["relation_id"], f["relation_id"])]
        out["fine_grained"].append({**f, "similarity": sim, "level": level_of(sim, thresholds)})
    return out


def level_split(records: list[dict], level: str) -> list[dict]:
    """The records of one level, each carrying only that level's fine-grained facts (none: left out)."""
    out = []
    for rec in records:
        facts = [f for f in rec["fine_grained"] if f["level"] == level]
        if facts:
            out.append({**rec, "fine_grained": facts})
    return out


def statistics(result: BuildResult) -> dict:
    recs = result.eval_records
    stats = {"cases": len(recs), "relations": len({r["relation_id"] for r in recs}),
             "subjects": len({r["subject_id"] for r in recs}), "levels": {},
             "constraint_facts": sum(len(r["constraint_facts"]) for r in recs),
             "krd_train_records": len(result.krd_records),
             "krd_train_subjects": len({r["subject_id"] for r in result.krd_records}),
             "subject_overlap": len({r["subject_id"] for r in recs} & {r["subject_id"] for r in result.krd_records})}
    for lv in LEVELS:
        split = level_split(recs, lv)
        sims = [f["similarity"] for r in split for f in r["fine_grained"]]
        stats["levels"][lv] = {"cases": len(split), "facts": len(sims),
                               "mean_similarity": round(sum(sims) / len(sims), 4) if sims else float("nan")}
    return stats
