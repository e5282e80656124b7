"""The FINE-KED builder (METHOD.md §2, steps 1-8): SPARQL -> edit cases with levelled fine-grained facts.

Every query's cost is bounded by what the build asks for, not by the size of the graph, so the same
build runs on the bundled snapshot and on WikiData (WDQS stops queries at 60 s):
- subjects come from popularity bands (`wikibase:sitelinks` counts as VALUES lookups), most linked first,
  as CounterFact-like benchmarks pick subjects a model is likely to know; each band is sized from the density
  of the one above, and the walk stops once enough are found;
- their facts (pool relations only) come from VALUES batches; o* candidates, classes and neighbours come from those facts
  (one VALUES query per batch of objects for classes), never from a scan of a whole relation;
- a batch that times out is retried as two halves (SparqlClient.run_batched).
Every random choice draws from a Random seeded by (seed, purpose, key), so the output does not depend on
iteration order or on Python's hash seed.
"""
from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from tqdm import tqdm

from fineked.paths import QUERIES
from fineked.records import LEVELS, record_from_dict
from fineked.similarity import DEFAULT_EMBEDDER, RelationText, level_of, relation_similarity, tertile_thresholds
from fineked.sparql import SparqlClient, SparqlError, direct_claims, integer, integer_values, values
from fineked.templates import RelationTemplates, load_templates

log = logging.getLogger(__name__)
WD = "http://www.wikidata.org/entity/"

# Popularity bands walk down from here, most linked first (WikiData's most linked item has about 350 sitelinks).
TOP_SITELINKS = 4096


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
    batch_size: int = 200  # subjects per subject-facts query
    object_batch: int = 400  # objects per object-classes query
    min_sitelinks: int = 6  # the lowest sitelink count the subject sample may reach
    band_rows: int = 5000  # aim of one popularity band query: its width follows the density of the band above
    band_limit: int = 20000  # LIMIT of one band query; a band that reaches it is split, its lower half fetched only if needed
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
    slowest: float = 0.0  # the slowest single network query of the stage, seconds
    query_seconds: float = 0.0  # time spent waiting on network queries (the rest is the builder's own work)


@dataclass
class BuildResult:
    eval_records: list[dict]
    krd_records: list[dict]
    thresholds: tuple[float, float]
    relations: dict[str, RelationText]
    stages: list[Stage] = field(default_factory=list)
    results_fingerprint: str = ""
    sampling: dict = field(default_factory=dict)


def qid(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


def pid_key(p: str) -> int:
    return int(p[1:])


def _rng(seed: int, purpose: str, key: str) -> random.Random:
    return random.Random(f"{seed}/{purpose}/{key}")  # str seeds hash with sha512: stable across runs


def queries_digest() -> str:
    """sha256 over the query files (name and text): the card records which queries made a build."""
    h = hashlib.sha256()
    for path in sorted(QUERIES.glob("*.rq")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return "sha256:" + h.hexdigest()


def next_band(hi: int, rows_above: int, width_above: int, target: int, floor: int) -> list[int]:
    """The sitelink counts of the next popularity band below `hi`, most linked first.

    Its width aims at `target` items from the density (items per count) of the band above, so a query's rows
    follow what the build asks for; never wider than hi/2 (bands halve while the top is empty), never below floor.
    """
    width = max(1, hi // 2)
    if rows_above:
        width = min(width, max(1, target * width_above // rows_above))
    return list(range(hi - 1, max(floor, hi - width) - 1, -1))


class _StageTimer:
    """Adds wall time, queries, cache hits and rows to a stage; a stage may be timed in several pieces."""

    def __init__(self, client: SparqlClient, stages: dict[str, Stage], name: str):
        self.client, self.stage = client, stages.setdefault(name, Stage(name))

    def __enter__(self) -> Stage:
        self.t0 = time.perf_counter()
        self.q0 = sum(self.client.network_queries.values())
        self.h0 = sum(self.client.cache_hits.values())
        self.r0 = sum(self.client.rows.values())
        self.n0 = len(self.client.timings)
        return self.stage

    def __exit__(self, *exc) -> None:
        s = self.stage
        s.seconds += time.perf_counter() - self.t0
        s.queries += sum(self.client.network_queries.values()) - self.q0
        s.cache_hits += sum(self.client.cache_hits.values()) - self.h0
        s.rows += sum(self.client.rows.values()) - self.r0
        new = self.client.timings[self.n0:]
        s.slowest = max([s.slowest] + [t.seconds for t in new])
        s.query_seconds += sum(t.seconds for t in new)


# --- stage helpers -------------------------------------------------------------------------------

def fetch_relations(client: SparqlClient, pool: list[str]) -> dict[str, RelationText]:
    rows = client.run_batched("relations", pool, lambda chunk: {"properties": values("prop", chunk)})
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


def fetch_band(client: SparqlClient, counts: list[int], limit: int) -> list[tuple[str, int]] | None:
    """(subject, sitelinks) of one band, most linked first, ties by Q-number; None when the band holds LIMIT items
    or more and can be split (the caller then fetches its halves, the lower one only if still needed), so the
    LIMIT never cuts a band at an endpoint-dependent row. A band of several counts is first counted up to the LIMIT
    (band_size.rq), so an oversized one costs a count, not LIMIT rows. A single count that reaches the LIMIT is kept
    as cut, with a warning.
    """
    params = {"counts": integer_values("links", counts), "limit": integer(limit)}
    if len(counts) > 1 and int(client.run("band_size", **params)[0]["n"]) >= limit:
        client.splits["popular_subjects"] += 1  # oversized: split it before fetching any row (band_size.rq)
        return None
    rows = client.run_batched("popular_subjects", counts,
                              lambda c: {"counts": integer_values("links", c), "limit": integer(limit)})
    if len(rows) >= limit:
        if len(counts) > 1:
            client.splits["popular_subjects"] += 1
            return None
        log.warning("%d items have %d sitelinks, more than the band LIMIT %d: keeping the endpoint's first %d",
                    len(rows), counts[0], limit, limit)
    out = {qid(r["s"]): int(r["links"]) for r in rows if qid(r["s"]).startswith("Q")}
    return sorted(out.items(), key=lambda kv: (-kv[1], pid_key(kv[0])))


def fetch_labels(client: SparqlClient, entities: list[str], labels: dict[str, str | None], batch: int) -> None:
    """Fill labels[e] with e's English label, or None when it has none (VALUES batches; each entity asked once)."""
    need = sorted((e for e in set(entities) if e not in labels), key=pid_key)
    for i in range(0, len(need), batch):
        chunk = need[i:i + batch]
        for r in client.run_batched("labels", chunk, lambda c: {"entities": values("e", c)}):
            labels[qid(r["e"])] = r["label"]
        for e in chunk:
            labels.setdefault(e, None)


def fetch_subject_facts(client: SparqlClient, subjects: list[str], pool: set[str], labels: dict[str, str | None],
                        label_batch: int = 500) -> dict[str, tuple[str, dict[str, dict[str, str]]]]:
    """VALUES batches: subject -> (label, relation -> object id -> object label), pool relations only, labelled ends."""
    triples = []
    props = direct_claims(sorted(pool, key=pid_key))
    for r in client.run_batched("subject_facts", subjects,
                                lambda chunk: {"subjects": values("s", chunk), "properties": props}):
        p, o = qid(r["p"]), qid(r["o"])
        if p in pool and r["o"].startswith(WD) and o.startswith("Q"):
            triples.append((qid(r["s"]), p, o))
    # labels only where a fact needs them: a subject without pool facts is dropped anyway
    fetch_labels(client, [e for s, _, o in triples for e in (s, o)], labels, label_batch)
    out: dict[str, tuple[str, dict]] = {}
    for s, p, o in triples:
        if labels.get(s) is None or labels.get(o) is None:
            continue  # items without an English label cannot make an English prompt
        if s not in out:
            out[s] = (labels[s], defaultdict(dict))
        out[s][1][p][o] = labels[o]
    return out


def fetch_object_types(client: SparqlClient, objects: list[str], batch: int, quiet: bool) -> dict[str, frozenset]:
    """object id -> its instance-of classes, for the objects the sampled facts point to (VALUES batches)."""
    types: dict[str, set] = defaultdict(set)
    chunks = [objects[i:i + batch] for i in range(0, len(objects), batch)]
    for chunk in tqdm(chunks, desc="object classes", unit="batch", disable=quiet):
        for r in client.run_batched("object_types", chunk, lambda c: {"objects": values("o", c)}):
            types[qid(r["o"])].add(qid(r["type"]))
    return {o: frozenset(t) for o, t in types.items()}


class ObjectPool:
    """The objects one relation takes for the sampled subjects: id -> (label, classes), with sorted views cached."""

    def __init__(self, objects: dict[str, tuple[str, frozenset]]):
        self.objects = objects
        self.ids = sorted(objects, key=pid_key)
        self._by_types: dict[frozenset, list[str]] = {}

    def __contains__(self, o: str) -> bool:
        return o in self.objects

    def get(self, o: str, default=None):
        return self.objects.get(o, default)

    def __getitem__(self, o: str) -> tuple[str, frozenset]:
        return self.objects[o]

    def sharing(self, types: frozenset) -> list[str]:
        if types not in self._by_types:
            self._by_types[types] = [o for o in self.ids if self.objects[o][1] & types]
        return self._by_types[types]


def choose_new_object(rng: random.Random, objects: ObjectPool, true_ids: set[str],
                      true_label: str, true_types: frozenset) -> tuple[str, str] | None:
    """o*: an object the relation takes elsewhere, preferring o's class, never a value (s, r) already has."""
    def ok(o: str) -> bool:
        return o not in true_ids and objects[o][0] != true_label

    for cands in (objects.sharing(true_types), objects.ids):
        # a few seeded draws find an allowed object at once (only the true values are excluded); else filter
        for _ in range(8):
            if cands and ok(o := rng.choice(cands)):
                return o, objects[o][0]
        allowed = [o for o in cands if ok(o)]
        if allowed:
            o = rng.choice(allowed)
            return o, objects[o][0]
    return None


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

def _enough(order: list[str], fetched: dict, cfg: BuildConfig) -> bool:
    """Enough subjects fetched: a margin over max_cases eligible ones, then krd capacity beyond them."""
    want_eval = math.ceil(1.25 * cfg.max_cases)
    eligible = 0
    krd_capacity = 0
    for s in order:
        if s not in fetched:
            continue
        n = len(fetched[s][1])
        if eligible < want_eval:
            eligible += n >= cfg.min_properties
        elif n >= 2:
            krd_capacity += n
    return eligible >= want_eval and krd_capacity >= 1.25 * cfg.krd_samples


def sample_subjects(client: SparqlClient, stages: dict[str, Stage], pool: set[str], cfg: BuildConfig
                    ) -> tuple[list[str], dict[str, int], dict[str, tuple[str, dict]], dict]:
    """Popular subjects, band by band from the most linked down, and their facts, until the build has enough
    (see _enough). Each band is sized from the density of the one above (next_band); a band whose rows reach
    the LIMIT is split in two, and its lower half is only fetched if the upper one was not enough."""
    order: list[str] = []
    links: dict[str, int] = {}
    fetched: dict[str, tuple[str, dict]] = {}
    labels: dict[str, str | None] = {}
    reached = None
    bar = tqdm(desc="subjects (popularity bands)", unit="subject", disable=cfg.quiet)
    hi, rows_above, width_above, enough = TOP_SITELINKS, 0, 0, False
    while hi > cfg.min_sitelinks and not enough:
        counts = next_band(hi, rows_above, width_above, cfg.band_rows, cfg.min_sitelinks)
        pending, band_rows = [counts], 0
        while pending and not enough:
            part = pending.pop()
            with _StageTimer(client, stages, "2 popular subjects (sitelink bands)") as st:
                band = fetch_band(client, part, cfg.band_limit)
                if band is None:  # over the LIMIT: the upper half next, the lower one after it if still needed
                    half = len(part) // 2
                    pending += [part[half:], part[:half]]
                    continue
                band = [(s, n) for s, n in band if s not in links]
                st.items += len(band)
            band_rows += len(band)
            reached = (part[-1], part[0])
            with _StageTimer(client, stages, "3 subject facts + labels (VALUES batches)") as st:
                for i in range(0, len(band), cfg.batch_size):
                    batch = band[i:i + cfg.batch_size]
                    order.extend(s for s, _ in batch)
                    links.update(batch)
                    got = fetch_subject_facts(client, [s for s, _ in batch], pool, labels)
                    fetched.update(got)
                    st.items += len(got)
                    bar.update(len(batch))
                    if _enough(order, fetched, cfg):
                        enough = True
                        break
        hi, rows_above, width_above = counts[-1], band_rows, len(counts)
    bar.close()
    sampling = {"bands_reached": reached, "subjects_sampled": len(order), "subjects_with_facts": len(fetched),
                "subjects_without_english_label": sum(s in labels and labels[s] is None for s in order),
                "min_sitelinks_sampled": min(links.values()) if links else None}
    return order, links, fetched, sampling


def build(client: SparqlClient, cfg: BuildConfig) -> BuildResult:
    """Build the benchmark; a BuildError (the endpoint's data cannot make it) also drops this build's cache entries."""
    try:
        return _build(client, cfg)
    except BuildError:
        dropped = client.forget_written()
        if dropped:
            log.info("dropped %d query cache entries written by the failed build", dropped)
        raise


def _build(client: SparqlClient, cfg: BuildConfig) -> BuildResult:
    templates = load_templates()
    pool = sorted(cfg.relations or templates, key=pid_key)
    for p in pool:
        if p not in templates:
            raise BuildError(f"unknown property {p}: it has no template in fineked/templates/templates.json "
                             f"(known: {', '.join(sorted(templates, key=pid_key)[:8])}, ...)")
    pool_set = set(pool)
    stages: dict[str, Stage] = {}

    with _StageTimer(client, stages, "1 relation pool") as st:
        relations = fetch_relations(client, pool)
        st.items = len(relations)

    order, links, fetched, sampling = sample_subjects(client, stages, pool_set, cfg)
    if not fetched:
        raise BuildError(f"empty result: no item with >= {cfg.min_sitelinks} sitelinks, an English label and facts "
                         "under the pool relations; check --endpoint/--relations/--min-sitelinks")

    with _StageTimer(client, stages, "4 object classes (VALUES batches)") as st:
        labels: dict[str, dict[str, str]] = defaultdict(dict)
        for s in order:
            if s in fetched:
                for r, objs in fetched[s][1].items():
                    labels[r].update(objs)
        all_objects = sorted({o for objs in labels.values() for o in objs}, key=pid_key)
        types = fetch_object_types(client, all_objects, cfg.object_batch, cfg.quiet)
        # o* candidates of r: the objects r takes for the sampled subjects, with their classes
        objects = {r: ObjectPool({o: (lab, types.get(o, frozenset())) for o, lab in objs.items()}) for r, objs in labels.items()}
        st.items = len(all_objects)

    drafts: list[dict] = []
    per_relation: Counter = Counter()
    with _StageTimer(client, stages, "5 edit cases") as st:
        for s in order:
            if len(drafts) >= cfg.max_cases:
                break
            if s in fetched and len(fetched[s][1]) >= cfg.min_properties:
                d = draft_case(s, *fetched[s], templates, objects, per_relation, cfg)
                if d is not None:
                    drafts.append(d)
                    per_relation[d["relation_id"]] += 1
        st.items = len(drafts)
    if not drafts:
        raise BuildError("empty result: no subject yields an edit case; relax --relations or --min-properties")
    if len(drafts) < cfg.max_cases:
        log.warning("only %d edit cases (asked for %d): the sampled bands ran out; lower --min-sitelinks",
                    len(drafts), cfg.max_cases)

    with _StageTimer(client, stages, "6 neighbours (from the sampled facts)") as st:
        add_neighbours(drafts, order, fetched, templates, cfg)
        st.items = sum(len(d["neighborhood_prompts"]) for d in drafts)

    with _StageTimer(client, stages, "7 relation similarity") as st:
        sims = relation_similarity([relations[p] for p in pool], cfg.embedder)
        fine_sims = [sims[(d["relation_id"], f["relation_id"])] for d in drafts for f in d["fine_grained"]]
        thresholds = cfg.thresholds or tertile_thresholds(fine_sims)
        st.items = len(pool) ** 2

    eval_subjects = {d["subject_id"] for d in drafts}
    with _StageTimer(client, stages, "8 krd_train records") as st:
        krd = []
        for s in order:
            if len(krd) >= cfg.krd_samples:
                break
            if s in fetched and s not in eval_subjects:
                krd.extend(krd_records(s, *fetched[s], templates, objects, cfg)[: cfg.krd_samples - len(krd)])
        st.items = len(krd)

    with _StageTimer(client, stages, "9 assemble + validate") as st:
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
    case_links = sorted(links[d["subject_id"]] for d in drafts)
    sampling.update({
        "rule": (f"items in descending order of wikibase:sitelinks (bands of counts from {TOP_SITELINKS} down, "
                 f"each sized for about {cfg.band_rows} items from the density of the band above, one VALUES query "
                 f"with LIMIT {cfg.band_limit}, split when reached; stopping once enough subjects are found, "
                 f"never below {cfg.min_sitelinks}); their facts and English labels in VALUES batches of {cfg.batch_size}; "
                 f"an edit case from each subject with facts under >= {cfg.min_properties} pool relations, "
                 f"in that order, its edit relation the least used so far; krd_train from the next subjects"),
        "case_sitelinks_min": case_links[0], "case_sitelinks_median": case_links[len(case_links) // 2],
        "timeout_splits": sum(client.splits.values())})
    return BuildResult(eval_records, krd_out, thresholds, relations, list(stages.values()),
                       "sha256:" + digest.hexdigest(), sampling)


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


def add_neighbours(drafts: list[dict], order: list[str], fetched: dict[str, tuple[str, dict]],
                   templates: dict[str, RelationTemplates], cfg: BuildConfig) -> None:
    """Neighbourhood prompts: other sampled (popular) subjects s' with (s', r, o); no query scans a relation's holders."""
    holders: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for s in order:
        if s in fetched:
            label, facts = fetched[s]
            for r, objs in facts.items():
                for o in objs:
                    holders[(r, o)][s] = label
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
