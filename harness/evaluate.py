"""Evaluating edit records on a model: pre-edit predictions (cached on disk) and post-edit metrics.

All the (prompt, target) pairs of a group of cases go through the batched scorer in one call.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from common.cache import cache_dir, read_json_entry, write_json_entry
from fineked.records import EditRecord
from harness.metrics import FactProbe, case_metrics, known_fact
from harness.scoring import score_pairs

log = logging.getLogger(__name__)
PRE_EDIT_VERSION = 1  # bump when what pre-edit predictions contain changes


@dataclass(frozen=True)
class PreEdit:
    """The unedited model's teacher-forced argmax on a case's locality probes."""

    neigh_argmax: tuple[tuple[int, ...], ...]  # neighbourhood prompts, target o
    fact_argmax: tuple[tuple[int, ...], ...]  # fine-grained prompts, target o'
    fact_known: tuple[bool, ...]


def compute_pre_edit(model: Any, tok: Any, records: Sequence[EditRecord], batch_size: int = 32) -> dict[str, PreEdit]:
    pairs: list[tuple[str, str]] = []
    for r in records:
        pairs += [(p, r.target_true.str) for p in r.neighborhood_prompts]
        pairs += [(f.prompt, f.target.str) for f in r.fine_grained]
    scores = iter(score_pairs(model, tok, pairs, batch_size=batch_size))
    out = {}
    for r in records:
        neigh = [next(scores) for _ in r.neighborhood_prompts]
        facts = [next(scores) for _ in r.fine_grained]
        out[r.case_id] = PreEdit(tuple(s.argmax for s in neigh), tuple(s.argmax for s in facts),
                                 tuple(known_fact(s) for s in facts))
    return out


def pre_edit_cache_path(model_name: str, fingerprint: str, model: Any = None) -> Path:
    """fingerprint: the dataset's; model: its checkpoint_digest (and placement) keys the entry too."""
    from editors.locate.fingerprint import checkpoint_digest
    from editors.placement import placement_tag
    weights = checkpoint_digest(model) + placement_tag(model) if model is not None else ""
    key = hashlib.sha256(f"{model_name}|{weights}|{fingerprint}|v{PRE_EDIT_VERSION}".encode()).hexdigest()[:16]
    return cache_dir() / "pre_edit" / f"{key}.json"


def load_or_compute_pre_edit(model: Any, tok: Any, records: Sequence[EditRecord], path: Path | None,
                             batch_size: int = 32) -> dict[str, PreEdit]:
    """Pre-edit predictions for every record, computed once per (model, dataset) and cached as JSON."""
    vocab = len(tok)

    def check(raw: Any) -> str | None:  # the entry must fit these records and this vocabulary
        if not isinstance(raw, dict):
            return "not a mapping of case ids"
        for r in records:
            v = raw.get(r.case_id)
            if v is None:
                continue
            try:
                neigh, facts, known = v["neigh_argmax"], v["fact_argmax"], v["fact_known"]
            except (TypeError, KeyError):
                return f"case {r.case_id} lacks its predictions"
            if (len(neigh), len(facts), len(known)) != (len(r.neighborhood_prompts), len(r.fine_grained),
                                                        len(r.fine_grained)):
                return f"case {r.case_id} has predictions for another number of prompts"
            if not all(isinstance(t, int) and 0 <= t < vocab for ids in (*neigh, *facts) for t in ids):
                return f"case {r.case_id} holds token ids outside the vocabulary"
            if not all(isinstance(k, bool) for k in known):
                return f"case {r.case_id} has a non-boolean known flag"
        return None

    raw = read_json_entry(path, check) if path is not None else None
    cached = {cid: PreEdit(tuple(map(tuple, v["neigh_argmax"])), tuple(map(tuple, v["fact_argmax"])),
                           tuple(v["fact_known"])) for cid, v in (raw or {}).items()}
    missing = [r for r in records if r.case_id not in cached]
    if missing:
        log.info("pre-edit predictions for %d cases", len(missing))
        cached.update(compute_pre_edit(model, tok, missing, batch_size))
        if path is not None:
            write_json_entry(path, {cid: asdict(p) for cid, p in cached.items()})
    return {r.case_id: cached[r.case_id] for r in records}


@torch.no_grad()
def greedy_generations(model: Any, tok: Any, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """Greedy continuations (prompt included), left-padded in one batch."""
    enc = [tok(p)["input_ids"] for p in prompts]
    width = max(map(len, enc))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in enc])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc])
    dev = next(model.parameters()).device
    out = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=pad)
    return [tok.decode(row[width - len(e):], skip_special_tokens=True) for row, e in zip(out.tolist(), enc)]


def evaluate_cases(model: Any, tok: Any, records: Sequence[EditRecord], pre: dict[str, PreEdit],
                   batch_size: int = 32, gen_tokens: int = 0,
                   skip_relations: dict[str, Iterable[str]] | None = None) -> list[dict[str, float | None]]:
    """Per-case metric values of the (edited) model.

    skip_relations[case_id]: relations whose fine-grained facts are left out, because another edit of
    the same batch rewrote them (subject-consistent batches).
    """
    skip = {cid: set(v) for cid, v in (skip_relations or {}).items()}
    pairs: list[tuple[str, str]] = []
    kept: dict[str, list[int]] = {}
    for r in records:
        new, true = r.target_new.str, r.target_true.str
        pairs += [(r.prompt, new), (r.prompt, true)]
        for p in r.paraphrase_prompts:
            pairs += [(p, new), (p, true)]
        for p in r.neighborhood_prompts:
            pairs += [(p, new), (p, true)]
        kept[r.case_id] = [i for i, f in enumerate(r.fine_grained) if f.relation_id not in skip.get(r.case_id, ())]
        for i in kept[r.case_id]:
            f = r.fine_grained[i]
            pairs += [(f.prompt, f.target.str), (f.prompt, new)]
    scores = iter(score_pairs(model, tok, pairs, batch_size=batch_size))
    texts = greedy_generations(model, tok, [r.subject for r in records], gen_tokens) if gen_tokens else None
    rows = []
    for k, r in enumerate(records):
        edit_new, edit_true = next(scores), next(scores)
        para = [(next(scores), next(scores)) for _ in r.paraphrase_prompts]
        neigh = [(next(scores), next(scores)) for _ in r.neighborhood_prompts]
        p = pre[r.case_id]
        facts = []
        for i in kept[r.case_id]:
            own, new = next(scores), next(scores)
            facts.append(FactProbe(r.fine_grained[i].level, own, new, p.fact_argmax[i], p.fact_known[i]))
        rows.append(case_metrics(edit_new, edit_true, para, neigh, p.neigh_argmax, facts,
                                 texts[k] if texts is not None else None))
    return rows
