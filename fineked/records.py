"""The FINE-KED record schema (METHOD.md §2), shared by the builder, the CounterFact loader and the harness.

Prompts hold the subject literally ("The capital of France is"); targets are stored
without a leading space; the scorer handles tokenizer spacing.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LEVELS = ("easy", "middle", "hard")
ALL_SPLIT = "all_levels"  # the cases with facts at every level (--split all); the Hub reserves the name "all"


class RecordError(ValueError):
    """A malformed record; the message names the case id and the field at fault."""

    def __init__(self, case_id: Any, field_name: str, problem: str):
        self.case_id, self.field_name = case_id, field_name
        super().__init__(f"record {case_id!r}: field {field_name!r} {problem}")


class DataFileError(ValueError):
    """A data file that cannot be read as records; the message names the file, the line and the fix."""


def read_json_lines(path: Path, text: bytes | None = None) -> list[tuple[int, Any]]:
    """(line number, parsed value) for every non-empty line of a JSONL file; a byte that is not UTF-8 or a line
    that is not JSON stops with the file and line named."""
    raw = path.read_bytes() if text is None else text
    out = []
    for i, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            out.append((i, json.loads(line.decode("utf-8"))))
        except UnicodeDecodeError as exc:
            raise DataFileError(f"{path}:{i}: byte {exc.start + 1} of the line is not UTF-8; save the file as "
                                "UTF-8") from None
        except ValueError as exc:
            raise DataFileError(f"{path}:{i}: not valid JSON ({exc}); fix or delete that line") from None
    return out


def records_from_lines(path: Path, lines: list[tuple[int, Any]]) -> list[EditRecord]:
    """Validated records, each error naming the file and line; case ids must be unique as strings."""
    out: list[EditRecord] = []
    seen: dict[str, int] = {}
    for i, d in lines:
        try:
            r = record_from_dict(d)
        except RecordError as exc:
            raise DataFileError(f"{path}:{i}: {exc}") from None
        if r.case_id in seen:
            raise DataFileError(f"{path}:{i}: case id {r.case_id!r} is already used on line {seen[r.case_id]} "
                                "(ids are compared as strings); give every case its own id")
        seen[r.case_id] = i
        out.append(r)
    return out


@dataclass(frozen=True)
class Target:
    str: str
    id: str | None = None


@dataclass(frozen=True)
class FineGrainedFact:
    relation_id: str
    prompt: str
    target: Target
    similarity: float
    level: str


@dataclass(frozen=True)
class ConstraintFact:
    """Another fact of the edited subject, usable as a preservation constraint (ROME-C/MEMIT-C).

    Drawn from a pool disjoint from the evaluation's fine-grained facts.
    """

    relation_id: str
    prompt: str
    target: Target


@dataclass(frozen=True)
class EditRecord:
    case_id: str
    subject: str
    subject_id: str | None
    relation_id: str | None
    prompt: str
    target_true: Target
    target_new: Target
    paraphrase_prompts: tuple[str, ...] = ()
    neighborhood_prompts: tuple[str, ...] = ()
    fine_grained: tuple[FineGrainedFact, ...] = ()
    constraint_facts: tuple[ConstraintFact, ...] = ()
    source: str = "fineked"

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("paraphrase_prompts", "neighborhood_prompts", "fine_grained", "constraint_facts"):
            d[k] = list(d[k])
        return d


def _req(d: dict, key: str, case_id: Any, kind: type | tuple = str) -> Any:
    if key not in d or d[key] is None:
        raise RecordError(case_id, key, "is missing")
    if not isinstance(d[key], kind):
        raise RecordError(case_id, key, f"must be {getattr(kind, '__name__', kind)}, got {type(d[key]).__name__}")
    return d[key]


def _target(d: dict, key: str, case_id: Any) -> Target:
    t = _req(d, key, case_id, dict)
    s = t.get("str")
    if not isinstance(s, str) or not s.strip():
        raise RecordError(case_id, f"{key}.str", "must be a non-empty string")
    tid = t.get("id")
    if tid is not None and not isinstance(tid, str):
        raise RecordError(case_id, f"{key}.id", "must be a string or null")
    return Target(s, tid)


def _prompts(d: dict, key: str, case_id: Any) -> tuple[str, ...]:
    v = d.get(key) or []
    if not isinstance(v, (list, tuple)) or not all(isinstance(p, str) and p.strip() for p in v):
        raise RecordError(case_id, key, "must be a list of non-empty strings")
    return tuple(v)


def record_from_dict(d: dict) -> EditRecord:
    """Validate a plain dict (from JSON, parquet or `datasets`) into an EditRecord."""
    if not isinstance(d, dict):
        raise RecordError(None, "<record>", f"must be a mapping, got {type(d).__name__}")
    case_id = d.get("case_id")
    if case_id is None or (isinstance(case_id, str) and not case_id):
        raise RecordError(case_id, "case_id", "is missing")
    case_id = str(case_id)
    subject = _req(d, "subject", case_id)
    prompt = _req(d, "prompt", case_id)
    if not subject.strip():
        raise RecordError(case_id, "subject", "is empty")
    if subject not in prompt:
        raise RecordError(case_id, "prompt", f"does not contain the subject {subject!r}")
    tt, tn = _target(d, "target_true", case_id), _target(d, "target_new", case_id)
    if tt.str == tn.str:
        raise RecordError(case_id, "target_new", "equals target_true")
    fine = []
    for i, f in enumerate(d.get("fine_grained") or []):
        where = f"fine_grained[{i}]"
        if not isinstance(f, dict):
            raise RecordError(case_id, where, "must be a mapping")
        level = f.get("level")
        if level not in LEVELS:
            raise RecordError(case_id, f"{where}.level", f"must be one of {LEVELS}, got {level!r}")
        sim = f.get("similarity")
        if isinstance(sim, bool) or not isinstance(sim, (int, float)) or not math.isfinite(sim) or not -1 <= sim <= 1:
            raise RecordError(case_id, f"{where}.similarity", f"must be a cosine similarity in [-1, 1], got {sim!r}")
        fine.append(FineGrainedFact(_req(f, "relation_id", case_id), _req(f, "prompt", case_id),
                                    _target(f, "target", case_id), float(sim), level))
    cons = []
    for i, f in enumerate(d.get("constraint_facts") or []):
        if not isinstance(f, dict):
            raise RecordError(case_id, f"constraint_facts[{i}]", "must be a mapping")
        cons.append(ConstraintFact(_req(f, "relation_id", case_id), _req(f, "prompt", case_id),
                                   _target(f, "target", case_id)))
    return EditRecord(
        case_id=case_id, subject=subject, subject_id=d.get("subject_id"), relation_id=d.get("relation_id"),
        prompt=prompt, target_true=tt, target_new=tn,
        paraphrase_prompts=_prompts(d, "paraphrase_prompts", case_id),
        neighborhood_prompts=_prompts(d, "neighborhood_prompts", case_id),
        fine_grained=tuple(fine), constraint_facts=tuple(cons), source=d.get("source") or "fineked",
    )
