"""CounterFact in the EasyEdit record format (path, URL or HF dataset id) -> EditRecord (source="counterfact").

EasyEdit fields: case_id, prompt, subject, ground_truth, target_new, rephrase_prompt, locality_prompt,
locality_ground_truth. As in ROME, a CounterFact neighbourhood prompt is about another subject with the same
(relation, true object), so its answer is target_true; EditRecord.neighborhood_prompts encodes exactly that.
A locality prompt whose answer is NOT the true object would be mis-scored, so it is dropped (and counted).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import urllib.request
from pathlib import Path

from common.cache import atomic_write_bytes
from fineked.paths import COUNTERFACT_SAMPLE, cache_dir
from fineked.records import DataFileError, EditRecord, RecordError, read_json_lines, record_from_dict

log = logging.getLogger(__name__)


def _read_json_records(path: Path) -> list[dict]:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if raw.lstrip().startswith(b"["):
        try:
            return json.loads(raw.decode("utf-8"))
        except ValueError as exc:  # UnicodeDecodeError included
            raise DataFileError(f"{path}: not a valid JSON array of records ({exc})") from None
    return [d for _, d in read_json_lines(path, raw)]


def _download(url: str) -> Path:
    name = hashlib.sha256(url.encode()).hexdigest()[:16] + "-" + Path(url.split("?")[0]).name
    dest = cache_dir() / "counterfact" / name
    if not dest.exists():
        req = urllib.request.Request(url, headers={"User-Agent": "fineked-suite/0.1"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            atomic_write_bytes(dest, resp.read())
    return dest


def raw_records(source: str | Path | None = None) -> list[dict]:
    if source is None:
        return _read_json_records(COUNTERFACT_SAMPLE)
    s = str(source)
    if s.startswith(("http://", "https://")):
        return _read_json_records(_download(s))
    path = Path(s)
    if path.exists():
        return _read_json_records(path)
    if isinstance(source, Path) or s.startswith((".", "/")) or s.count("/") != 1:
        raise FileNotFoundError(f"CounterFact source {s} not found; pass a JSON/JSONL path, a URL or a hub id ORG/NAME")
    from datasets import load_dataset

    return load_dataset(s, split="train").to_list()


def normalise(raw: dict) -> dict:
    """One EasyEdit record -> the FINE-KED record dict."""
    case_id = raw.get("case_id")
    gt = raw.get("ground_truth")
    if isinstance(gt, list):  # some EasyEdit dumps wrap answers in lists
        gt = gt[0] if gt else None
    loc_prompt, loc_gt = raw.get("locality_prompt"), raw.get("locality_ground_truth")
    if isinstance(loc_gt, list):
        loc_gt = loc_gt[0] if loc_gt else None
    neighbourhood = [loc_prompt] if loc_prompt and loc_gt == gt else []
    rephrase = raw.get("rephrase_prompt")
    paraphrases = rephrase if isinstance(rephrase, list) else ([rephrase] if rephrase else [])
    return {
        "case_id": f"cf-{case_id}" if case_id is not None else None, "subject": raw.get("subject"),
        "subject_id": None, "relation_id": raw.get("relation_id"), "prompt": raw.get("prompt"),
        "target_true": {"str": gt, "id": None}, "target_new": {"str": raw.get("target_new"), "id": None},
        "paraphrase_prompts": paraphrases, "neighborhood_prompts": neighbourhood,
        "fine_grained": [], "constraint_facts": [], "source": "counterfact",
    }


def load_counterfact(source: str | Path | None = None, limit: int | None = None) -> list[EditRecord]:
    """Validated CounterFact records; None loads the bundled ~200-case sample."""
    raws = raw_records(source)
    if limit is not None:
        raws = raws[:limit]
    out, dropped = [], 0
    for raw in raws:
        d = normalise(raw)
        if raw.get("locality_prompt") and not d["neighborhood_prompts"]:
            dropped += 1
        out.append(record_from_dict(d))
    if dropped:
        log.warning("dropped %d locality prompts whose answer is not the case's true object", dropped)
    return out


__all__ = ["load_counterfact", "normalise", "raw_records", "RecordError"]
