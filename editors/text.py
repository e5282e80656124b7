"""Target-token batches for teacher forcing, shared by the editors and the harness scorer.

A target gets a leading space unless the prompt ends in whitespace. Target tokens are the tail of
the tokenized `prompt + sep + target` after the tokenized prompt, so a BOS (LLaMA style) appears
once, before the prompt, and merges match what the model would see in running text (encode_pair).
Every batch of prompt + target rows (FT's loss, the scorer, v*, DiKE's states) is padded by pad_pairs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch


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


def pad_id_of(tok: Any) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)


@dataclass
class TargetTokens:
    """Padded rows of prompt tokens followed by target tokens, one row per (prompt ids, target ids) pair."""

    input_ids: torch.Tensor  # (n, T) long
    attention_mask: torch.Tensor  # (n, T) long
    labels: torch.Tensor  # (n, T) long: the target token the logit at position j predicts, -100 where none
    starts: list[int]  # each row's first real position (> 0 under left padding)


def pad_pairs(encoded: Sequence[tuple[list[int], list[int]]], pad_id: int, padding_side: str = "right",
              last_target_input: bool = True) -> TargetTokens:
    """The one place a target-token batch is built. last_target_input=False leaves the last target token out of
    the inputs (it predicts nothing; the scorer and FT), True keeps it (a row then reads as running text). A pair
    with no target tokens is a prompt-only row (v*'s KL row)."""
    seqs = [p + (t if last_target_input else t[:-1]) for p, t in encoded]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    starts = []
    for i, ((p, t), s) in enumerate(zip(encoded, seqs)):
        off = width - len(s) if padding_side == "left" else 0
        ids[i, off:off + len(s)] = torch.tensor(s)
        mask[i, off:off + len(s)] = 1
        if t:  # position j predicts token j + 1: the last prompt token predicts t[0]
            labels[i, off + len(p) - 1:off + len(p) - 1 + len(t)] = torch.tensor(t)
        starts.append(off)
    return TargetTokens(ids, mask, labels, starts)


def target_tokens(tok: Any, prompts: Sequence[str], targets: Sequence[str | None], padding_side: str = "right",
                  last_target_input: bool = True) -> TargetTokens:
    """pad_pairs of encode_pair(prompt, target) for each pair; a target None gives a prompt-only row."""
    encoded = [encode_pair(tok, p, t) if t is not None else (list(tok(p)["input_ids"]), [])
               for p, t in zip(prompts, targets)]
    return pad_pairs(encoded, pad_id_of(tok), padding_side, last_target_input)
