"""Resolving `--dataset` to validated EditRecords, a display name and a content fingerprint.

- a FINE-KED folder or hub id, with --split easy|middle|hard (fineked.export.load_fineked);
- `counterfact` (the bundled sample) or `counterfact:PATH` (fineked.counterfact.load_counterfact);
- a `.jsonl` file of records in the METHOD.md §2 shape (hand-built cases, tests).
"""
from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass
from pathlib import Path

from fineked.records import LEVELS, EditRecord, record_from_dict
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


def _loader(module: str, func: str):
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError):
        raise UserError(f"{module}.{func} is not available in this installation; "
                        "pass a .jsonl file of records instead") from None


def load_dataset(spec: str, split: str | None = None) -> Dataset:
    if spec == "counterfact" or spec.startswith("counterfact:"):
        path = spec.partition(":")[2] or None
        records = tuple(_loader("fineked.counterfact", "load_counterfact")(path, None))
        name = "counterfact" if path is None else f"counterfact-{Path(path).stem}"
        return Dataset(name, spec, None, records, fingerprint(records))
    if spec.endswith(".jsonl") and not Path(spec).is_file():
        raise UserError(f"{spec} does not exist; pass an existing .jsonl of records, counterfact, or a FINE-KED folder")
    if spec.endswith(".jsonl"):
        lines = [ln for ln in Path(spec).read_text().splitlines() if ln.strip()]
        records = tuple(record_from_dict(json.loads(ln)) for ln in lines)
        return Dataset(Path(spec).stem, spec, None, records, fingerprint(records))
    if split not in (*LEVELS, "all"):
        raise UserError(f"FINE-KED dataset {spec!r} needs --split, one of {', '.join(LEVELS)} or all")
    records = tuple(_loader("fineked.export", "load_fineked")(spec, split))
    base = Path(spec.rstrip("/")).name or spec
    return Dataset(f"{base}-{split}", spec, split, records, fingerprint(records))
