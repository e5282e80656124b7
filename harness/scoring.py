"""Batched teacher-forced scoring of (prompt, target) pairs: many pairs per padded forward pass.

Spacing and BOS handling live in editors.text.encode_pair, and the padded batch is editors.text.pad_pairs, shared
with the editors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from editors.text import TargetTokens, encode_pair, pad_id_of, pad_pairs


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
def forward_padded(model: Any, batch: TargetTokens) -> torch.Tensor:
    """Logits (B, T, V) of a padded batch. Position ids are computed from the mask so left and right padding give
    the same numbers."""
    pos = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    dev = _device(model)
    out = model(input_ids=batch.input_ids.to(dev), attention_mask=batch.attention_mask.to(dev),
                position_ids=pos.to(dev))
    return out.logits.float()


def length_sorted_batches(encoded: Sequence[tuple[list[int], list[int]]], batch_size: int, pad_id: int,
                          padding_side: str = "right") -> Iterator[tuple[list[int], TargetTokens]]:
    """(indices, padded batch) per batch of encoded (prompt, target) pairs, sorted by length so batches pad little.

    The last target token is never an input: it has nothing left to predict.
    """
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield idx, pad_pairs([encoded[i] for i in idx], pad_id, padding_side, last_target_input=False)


def score_pairs(model: Any, tok: Any, pairs: Sequence[tuple[str, str]], batch_size: int = 32,
                padding_side: str = "right") -> list[TargetScore]:
    """Teacher-forced log-probs and argmax of every target after its prompt, in padded batches.

    Pairs are sorted by length so each batch pads little; results come back in input order.
    """
    encoded = [encode_pair(tok, p, t) for p, t in pairs]
    results: list[TargetScore | None] = [None] * len(encoded)
    for idx, batch in length_sorted_batches(encoded, batch_size, pad_id_of(tok), padding_side):
        logits = forward_padded(model, batch)
        logp = torch.log_softmax(logits, dim=-1)
        for row, i in enumerate(idx):
            p_ids, t_ids = encoded[i]
            first = batch.starts[row] + len(p_ids) - 1  # position whose output predicts target token 0
            positions = torch.arange(first, first + len(t_ids))
            lp = logp[row, positions, torch.tensor(t_ids)]
            am = logits[row, positions].argmax(-1)
            results[i] = TargetScore(tuple(t_ids), tuple(lp.tolist()), tuple(am.tolist()))
    return results  # type: ignore[return-value]
