"""Tokenizing (prompt, target) pairs for teacher forcing, shared by editors and the harness scorer.

A target gets a leading space unless the prompt ends in whitespace. Target tokens are the tail of
the tokenized `prompt + sep + target` after the tokenized prompt, so a BOS (LLaMA style) appears
once, before the prompt, and merges match what the model would see in running text.
"""
from __future__ import annotations

from typing import Any


def encode_pair(tok: Any, prompt: str, target: str) -> tuple[list[int], list[int]]:
    """(prompt ids incl. any BOS, target ids)."""
    sep = "" if prompt[-1:].isspace() else " "
    p_ids = list(tok(prompt)["input_ids"])
    full = list(tok(prompt + sep + target)["input_ids"])
    if full[:len(p_ids)] == p_ids and len(full) > len(p_ids):
        t_ids = full[len(p_ids):]
    else:  # the boundary merged (prompt ended in whitespace): tokenize the target on its own
        t_ids = list(tok(sep + target, add_special_tokens=False)["input_ids"])
    eos = getattr(tok, "eos_token_id", None)
    if len(t_ids) > 1 and t_ids[-1] == eos:
        t_ids = t_ids[:-1]  # tokenizers whose post-processor appends EOS
    if not t_ids:
        raise ValueError(f"target {target!r} tokenizes to nothing after prompt {prompt!r}")
    return p_ids, t_ids
