"""Resolving `--dataset` to validated EditRecords, a display name and a content fingerprint.

- a FINE-KED folder or hub id, with --split easy|middle|hard (fineked.export.load_fineked);
- `counterfact` (the bundled sample) or `counterfact:PATH` (fineked.counterfact.load_counterfact);
- a `.jsonl` file of records in the METHOD.md §2 shape (hand-built cases, tests).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fineked.counterfact import load_counterfact
from fineked.export import ALL_LEVELS, load_fineked
from fineked.records import LEVELS, EditRecord, read_json_lines, records_from_lines
from harness.errors import UserError


@dataclass(frozen=True)
class Dataset:
    name: str  # shown in reports: "counterfact", "fineked-hard", ...
    spec: str
    split: str | None
    records: tuple[EditRecord, ...]
    fingerprint: str


def fingerprint(records: tuple[EditRecord, ...]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r.to_dict(), sort_keys=True).encode())
    return h.hexdigest()[:16]


def unique_ids(records: tuple[EditRecord, ...], spec: str) -> tuple[EditRecord, ...]:
    """Results are keyed by case id: two records with one id would share (and lose) a line."""
    seen: set[str] = set()
    for r in records:
        if r.case_id in seen:
            raise UserError(f"dataset {spec!r} has case id {r.case_id!r} twice (ids are compared as strings); "
                            "give every case its own id")
        seen.add(r.case_id)
    return records


def load_dataset(spec: str, split: str | None = None) -> Dataset:
    if spec == "counterfact" or spec.startswith("counterfact:") or spec.endswith(".jsonl"):
        if split is not None:
            raise UserError(f"--split picks a FINE-KED level; {spec!r} has no levels, drop --split")
    if spec == "counterfact" or spec.startswith("counterfact:"):
        path = spec.partition(":")[2] or None
        records = unique_ids(tuple(load_counterfact(path, None)), spec)
        name = "counterfact" if path is None else f"counterfact-{Path(path).stem}"
        return Dataset(name, spec, None, records, fingerprint(records))
    if spec.endswith(".jsonl") and not Path(spec).is_file():
        raise UserError(f"{spec} does not exist; pass an existing .jsonl of records, counterfact, or a FINE-KED folder")
    if spec.endswith(".jsonl"):
        records = tuple(records_from_lines(Path(spec), read_json_lines(Path(spec))))
        return Dataset(Path(spec).stem, spec, None, records, fingerprint(records))
    if split not in (*LEVELS, ALL_LEVELS):
        raise UserError(f"FINE-KED dataset {spec!r} needs --split, one of {', '.join(LEVELS)} or all")
    records = unique_ids(tuple(load_fineked(spec, split)), spec)
    base = Path(spec.rstrip("/")).name or spec
    return Dataset(f"{base}-{split}", spec, split, records, fingerprint(records))


MAX_PROMPT_TOKENS = 512  # prompt + target; far above any benchmark prompt, far below what blows up the scorer


def check_lengths(records: tuple[EditRecord, ...] | list[EditRecord], tok: Any, model_positions: int | None) -> None:
    """Every prompt with its target fits the cap (and the model's context): a 1 MB prompt is refused, not padded
    into a batch that asks for hundreds of GB."""
    cap = min(MAX_PROMPT_TOKENS, model_positions or MAX_PROMPT_TOKENS)
    for r in records:
        texts = [(f"{r.prompt} {r.target_new.str}", "prompt"), (f"{r.prompt} {r.target_true.str}", "prompt")]
        texts += [(f"{p} {r.target_new.str}", "paraphrase_prompts") for p in r.paraphrase_prompts]
        texts += [(f"{p} {r.target_true.str}", "neighborhood_prompts") for p in r.neighborhood_prompts]
        texts += [(f"{f.prompt} {f.target.str}", "fine_grained") for f in r.fine_grained]
        texts += [(f"{c.prompt} {c.target.str}", "constraint_facts") for c in r.constraint_facts]
        for text, field in texts:
            n = len(text) if len(text) > 64 * cap else len(tok(text)["input_ids"])  # no tokenising a megabyte
            if n > cap:
                raise UserError(f"case {r.case_id}: a {field} text with its target is {n} "
                                f"{'characters' if len(text) > 64 * cap else 'tokens'} long, over the cap of {cap} "
                                "tokens; shorten it or drop the case")
