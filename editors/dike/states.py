"""Hidden states DiKE works on, read with the shared locate hooks.

h_s: the residual stream after block `layer` at the last subject token.
h_r: the residual stream after block `repr_layer` at the last prompt token.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from editors.adapters import ModelAdapter
from editors.locate.hooks import block_output, run_until
from editors.locate.tokens import last_token_positions, subject_char_span, subject_last_token_positions, \
    token_at_char, tokenize


@torch.no_grad()
def subject_and_relation_states(model: Any, tok: Any, adapter: ModelAdapter, layer: int, repr_layer: int,
                                prompts: Sequence[str], subjects: Sequence[str],
                                batch_size: int = 32, quiet: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(h_s, h_r), each (n, d) float32, for bare prompts; the pass stops after the deeper of the two blocks."""
    device = next(model.parameters()).device
    hs, hr = [], []
    deeper = max(layer, repr_layer)
    for i in tqdm(range(0, len(prompts), batch_size), desc="caching h_s, h_r", disable=quiet, unit="batch"):
        enc, pos = subject_last_token_positions(tok, prompts[i:i + batch_size], subjects[i:i + batch_size], "right")
        last = last_token_positions(enc["attention_mask"])
        inputs = {k: v.to(device) for k, v in enc.items()}
        with block_output(model, adapter, layer, pos, stop=(layer == deeper)) as s_site, \
                block_output(model, adapter, repr_layer, last, stop=(repr_layer == deeper and layer != deeper)) as r_site:
            run_until(model, **inputs, use_cache=False)
        hs.append(s_site.value.float().cpu())
        hr.append(r_site.value.float().cpu())
    return torch.cat(hs), torch.cat(hr)


@dataclass
class TargetBatch:
    """Left-padded rows `prompt + " " + target`, with where the subject is and which logits predict the target."""

    inputs: dict[str, torch.Tensor]  # input_ids, attention_mask, position_ids
    subject_positions: list[int]
    target_ids: torch.Tensor  # (n, keep): token predicted by each kept logit
    target_mask: torch.Tensor  # (n, keep): 1 where that logit predicts a target token
    keep: int  # logits_to_keep: the last `keep` positions cover every row's target


def target_batch(tok: Any, prompts: Sequence[str], subjects: Sequence[str], targets: Sequence[str],
                 device: Any = "cpu") -> TargetBatch:
    texts = [p + " " + t for p, t in zip(prompts, targets)]
    enc = tokenize(tok, texts, "left", offsets=True)
    offsets, mask = enc.pop("offset_mapping"), enc["attention_mask"]
    n, T = mask.shape
    positions, pred_mask = [], torch.zeros(n, T - 1)
    for i, (p, s) in enumerate(zip(prompts, subjects)):
        _, end = subject_char_span(p, s)
        positions.append(token_at_char(offsets[i], mask[i], end - 1))
        real = (mask[i, 1:] == 1) & (offsets[i, 1:, 1] > offsets[i, 1:, 0])
        pred_mask[i] = (real & (offsets[i, 1:, 0] >= len(p))).float()  # token j+1 is a target token
        if pred_mask[i].sum() == 0:
            raise ValueError(f"target {targets[i]!r} of prompt {p!r} produced no tokens")
    first = int(pred_mask.argmax(1).min())  # earliest logit that predicts a target token
    keep = (T - 1) - first
    ids = enc["input_ids"]
    # logits_to_keep=keep returns the last `keep` positions; the last position predicts nothing (no next token).
    target_ids = torch.cat([ids[:, first + 1:], torch.zeros(n, 1, dtype=ids.dtype)], 1)
    target_mask = torch.cat([pred_mask[:, first:], torch.zeros(n, 1)], 1)
    inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(1) - 1).clamp(min=0)}
    return TargetBatch({k: v.to(device) for k, v in inputs.items()}, positions, target_ids.to(device),
                       target_mask.to(device), keep + 1)


def substituted_nll(model: Any, adapter: ModelAdapter, layer: int, batch: TargetBatch,
                    vectors: torch.Tensor) -> torch.Tensor:
    """Per-row mean NLL of the target with h_s replaced by `vectors` (n, d) after block `layer`."""
    with block_output(model, adapter, layer, batch.subject_positions, replace=vectors):
        logits = model(**batch.inputs, use_cache=False, logits_to_keep=batch.keep).logits
    logp = logits.float().log_softmax(-1)
    nll = -logp.gather(-1, batch.target_ids.unsqueeze(-1)).squeeze(-1)
    return (nll * batch.target_mask).sum(1) / batch.target_mask.sum(1)
