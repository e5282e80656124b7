"""Short random context prefixes, sampled from the model once and cached (memory and disk).

k* and v* are averaged over "{prefix}{prompt}" so the edit does not hinge on the prompt starting the text
(ROME/MEMIT "context templates"). Sampling is seeded top-k, so the same model and seed give the same prefixes.
"""
from __future__ import annotations

import logging
from typing import Any

import torch

from common.cache import cache_dir, read_json_entry, write_json_entry
from editors.locate.fingerprint import model_fingerprint

log = logging.getLogger(__name__)

START_WORDS = ("The", "Therefore", "Because", "I", "You")  # as in ROME's context templates
_memory: dict[tuple[str, int, int, int], list[str]] = {}


@torch.no_grad()
def sample_prefixes(model: Any, tok: Any, n: int, length: int, seed: int, top_k: int = 5) -> list[str]:
    """n texts of `length` new tokens, each started by one of START_WORDS in turn, ending in '. '."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    device = next(model.parameters()).device
    out: list[str] = []
    for w, word in enumerate(START_WORDS):
        count = len(range(w, n, len(START_WORDS)))
        if count == 0:
            continue
        ids = tok([word] * count, return_tensors="pt").input_ids.to(device)  # same length: no padding needed
        start = ids.shape[1]
        for _ in range(length):
            logits = model(input_ids=ids, use_cache=False).logits[:, -1].float().cpu()
            top = logits.topk(top_k, dim=-1)
            pick = torch.multinomial(top.values.softmax(-1), 1, generator=gen)
            ids = torch.cat([ids, top.indices.gather(1, pick).to(device)], dim=1)
        for row in ids:
            text = tok.decode(row[:start].tolist() + row[start:].tolist(), skip_special_tokens=True)
            out.append(text.replace("{", " ").replace("}", " ").strip() + ". ")
    # interleave back to round-robin order so the first k prefixes cover several start words
    order = [i for w in range(len(START_WORDS)) for i in range(w, n, len(START_WORDS))]
    return [p for _, p in sorted(zip(order, out))]


def context_prefixes(model: Any, tok: Any, n: int, length: int, seed: int = 0) -> list[str]:
    """Seeded random prefixes for `model`, generated once and then read from memory or the disk cache."""
    if n <= 0:
        return []
    fp = model_fingerprint(model)
    key = (fp, n, length, seed)
    if key in _memory:
        return list(_memory[key])
    path = cache_dir() / "prefixes" / f"{fp}-n{n}-len{length}-seed{seed}.json"
    prefixes = read_json_entry(path, lambda v: None if isinstance(v, list) and len(v) == n and all(
        isinstance(p, str) for p in v) else f"expected {n} prefix strings")
    if prefixes is None:
        log.info("sampling %d context prefixes of %d tokens", n, length)
        prefixes = sample_prefixes(model, tok, n, length, seed)
        write_json_entry(path, prefixes)
    _memory[key] = prefixes
    return list(prefixes)


def prefix_groups(model: Any, tok: Any, groups: list[list[int]], seed: int = 0) -> list[str]:
    """Prefixes for ROME-style length groups [[length, n], ...] (e.g. [[5, 10], [10, 10]])."""
    out: list[str] = []
    for i, (length, n) in enumerate(groups):
        out += context_prefixes(model, tok, n, length, seed + i)
    return out
