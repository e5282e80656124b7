"""The dataset card (README.md) of a build: YAML configs, statistics, thresholds, provenance."""
from __future__ import annotations

from fineked.records import ALL_SPLIT, LEVELS


def stats_table(stats: dict) -> str:
    lines = ["| level | cases | fine-grained facts | mean similarity |", "|---|---:|---:|---:|"]
    for lv in LEVELS:
        s = stats["levels"][lv]
        lines.append(f"| {lv} | {s['cases']:,} | {s['facts']:,} | {s['mean_similarity']:.4f} |")
    lines += ["", "| | value |", "|---|---:|",
              f"| edit cases | {stats['cases']:,} |", f"| edit relations | {stats['relations']} |",
              f"| subjects | {stats['subjects']:,} |", f"| held-out constraint facts | {stats['constraint_facts']:,} |",
              f"| krd_train records | {stats['krd_train_records']:,} |",
              f"| krd_train subjects | {stats['krd_train_subjects']:,} |",
              f"| subject overlap eval/krd_train | {stats['subject_overlap']} |"]
    return "\n".join(lines)


def render_card(stats: dict, info: dict) -> str:
    data_files = "\n".join(f"  - split: {lv}\n    path: data/{lv}.parquet" for lv in (*LEVELS, ALL_SPLIT))
    lo, hi = info["thresholds"]
    return f"""---
license: cc0-1.0
language:
- en
pretty_name: FINE-KED (rebuilt from WikiData)
task_categories:
- text-generation
tags:
- knowledge-editing
configs:
- config_name: default
  default: true
  data_files:
{data_files}
- config_name: krd_train
  data_files:
  - split: train
    path: krd_train/train.parquet
---

# FINE-KED (rebuilt)

Fine-grained knowledge-editing benchmark: each edit case rewrites one fact (s, r, o) -> (s, r, o*) and
carries the same subject's **other** facts (s, r', o') as fine-grained locality probes, graded by how
close r' is to r: `easy` (distant), `middle`, `hard` (close). Built by `fineked build` following
METHOD.md §2 of the FINE-KED suite; the DiKE paper (arXiv 2505.18774) released no data, so this is a
reproducible re-construction, not the paper's file.

## Statistics

{stats_table(stats)}

## How it was made

- **Endpoint:** {info['endpoint']}
- **Build date:** {info['build_date']} (the date of the queries; the only line of this card that changes between
  two builds of the same endpoint, seed and configuration; pin it with `--build-date`)
- **Snapshot fingerprint:** `{info['snapshot']}`
- **Query files (fineked/queries/*.rq) digest:** `{info['queries']}`
- **Query results fingerprint:** `{info['results']}`
- **Subject sampling:** {info['sampling'].get('rule', 'n/a')}. This build sampled
  {info['sampling'].get('subjects_sampled', 0):,} subjects, down to {info['sampling'].get('min_sitelinks_sampled')} sitelinks;
  its edit cases' subjects have {info['sampling'].get('case_sitelinks_min')} sitelinks or more
  (median {info['sampling'].get('case_sitelinks_median')}).
- **Seed:** {info['seed']}; **max cases:** {info['max_cases']}; **min properties per subject:** {info['min_properties']}
- **Relation similarity:** cosine of `{info['embedder']}` embeddings of "label: description" (labels and
  descriptions fetched from WikiData by SPARQL).
- **Level thresholds (tertiles of the fine-grained similarity distribution):** easy < {lo:.6f} <= middle < {hi:.6f} <= hard.
  Rebuild with `--thresholds {lo:.6f},{hi:.6f}` to keep them.
- **Edit relations** are single-valued for the subject; o* is drawn with a fixed seed from the objects the
  relation takes for other subjects, preferring o's `instance of` class, never a value (s, r) has.
- **Prompts** come from `fineked/templates/templates.json` (MQuAKE cloze, ParaRel paraphrases, and
  hand-written templates); the object always comes last.

## Fields

`case_id, subject, subject_id, relation_id, prompt, target_true{{str,id}}, target_new{{str,id}},
paraphrase_prompts[], neighborhood_prompts[], fine_grained[{{relation_id, prompt, target{{str,id}}, similarity, level}}],
constraint_facts[{{relation_id, prompt, target{{str,id}}}}], source`

- A case appears in a level's split with only that level's fine-grained facts (cases with none are left out of it).
- **{ALL_SPLIT}:** the cases with fine-grained facts at every level, each carrying all of them (level by level),
  so one edit is scored on every level (`fineked run --split all`).
- **constraint_facts:** up to {info['n_constraints']} other facts of the same subject **held out** of
  `fine_grained` (never evaluated). ROME-C/MEMIT-C use them as preservation constraints, so they never
  overlap the facts the benchmark scores.
- **krd_train** (separate config): subjects disjoint from the evaluation (overlap {stats['subject_overlap']});
  one record per (s, r, o) with every sibling fact of s in `fine_grained`, for training DiKE's KRD module.

## Licence and sources

WikiData content is CC0. Facts were gathered from public WikiData-derived datasets (T-REx/LAMA, CoDEx,
X-FACTR, LM-KBC 2023, FewRel, DLAMA); templates from MQuAKE and ParaRel (MIT) plus the suite's own.
"""
