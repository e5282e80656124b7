"""Batched teacher-forced scoring of (prompt, target) pairs: many pairs per padded forward pass.

Spacing and BOS handling live in editors.text.encode_pair, shared with the editors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from editors.text import encode_pair


@dataclass(frozen=True)
class TargetScore:
    """Teacher-forced scores of one target after one prompt."""

    target_ids: tuple[int, ...]
    logprobs: tuple[float, ...]  # log P(target token i | prompt, target[:i])
    argmax: tuple[int, ...]  # the model's argmax at each target position

    @property
    def mean_nll(self) -> float:
        return -sum(self.logprobs) / len(self.logprobs)

    @property
    def prob(self) -> float:
        """exp(-mean token NLL): the ROME/MEMIT probability-protocol score."""
        return float(torch.tensor(-self.mean_nll, dtype=torch.float64).exp())

    @property
    def token_accuracy(self) -> float:
        return sum(a == t for a, t in zip(self.argmax, self.target_ids)) / len(self.target_ids)


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def forward_padded(model: Any, seqs: Sequence[list[int]], pad_id: int, padding_side: str = "right"
                   ) -> tuple[torch.Tensor, list[int]]:
    """Logits (B, T, V) of padded sequences and each row's offset of its first real token.

    Position ids are computed from the mask so left and right padding give the same numbers.
    """
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    offsets = []
    for i, s in enumerate(seqs):
        off = width - len(s) if padding_side == "left" else 0
        ids[i, off:off + len(s)] = torch.tensor(s)
        mask[i, off:off + len(s)] = 1
        offsets.append(off)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    dev = _device(model)
    out = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev))
    return out.logits.float(), offsets


def pad_id_of(tok: Any) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)


def length_sorted_batches(encoded: Sequence[tuple[list[int], list[int]]], batch_size: int
                          ) -> Iterator[tuple[list[int], list[list[int]]]]:
    """(indices, input sequences) per batch of encoded (prompt, target) pairs, sorted by length so batches pad little.

    The last target token is never an input: it has nothing left to predict.
    """
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield idx, [encoded[i][0] + encoded[i][1][:-1] for i in idx]


def score_pairs(model: Any, tok: Any, pairs: Sequence[tuple[str, str]], batch_size: int = 32,
                padding_side: str = "right") -> list[TargetScore]:
    """Teacher-forced log-probs and argmax of every target after its prompt, in padded batches.

    Pairs are sorted by length so each batch pads little; results come back in input order.
    """
    encoded = [encode_pair(tok, p, t) for p, t in pairs]
    results: list[TargetScore | None] = [None] * len(encoded)
    for idx, seqs in length_sorted_batches(encoded, batch_size):
        logits, offsets = forward_padded(model, seqs, pad_id_of(tok), padding_side)
        logp = torch.log_softmax(logits, dim=-1)
        for row, i in enumerate(idx):
            p_ids, t_ids = encoded[i]
            first = offsets[row] + len(p_ids) - 1  # position whose output predicts target token 0
            positions = torch.arange(first, first + len(t_ids))
            lp = logp[row, positions, torch.tensor(t_ids)]
            am = logits[row, positions].argmax(-1)
            results[i] = TargetScore(tuple(t_ids), tuple(lp.tolist()), tuple(am.tolist()))
    return results  # type: ignore[return-value]
