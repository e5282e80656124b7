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
from editors.locate.tokens import last_token_positions, subject_last_token_positions
from editors.text import target_tokens


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
    """Left-padded rows of prompt and target tokens (editors.text), with where the subject is and which logits predict
    the target."""

    inputs: dict[str, torch.Tensor]  # input_ids, attention_mask, position_ids
    subject_positions: list[int]
    target_ids: torch.Tensor  # (n, keep): token predicted by each kept logit
    target_mask: torch.Tensor  # (n, keep): 1 where that logit predicts a target token
    keep: int  # the last `keep` positions cover every row's target (target_nll reads only those)


def target_batch(tok: Any, prompts: Sequence[str], subjects: Sequence[str], targets: Sequence[str],
                 device: Any = "cpu") -> TargetBatch:
    batch = target_tokens(tok, prompts, targets, "left")
    _, at = subject_last_token_positions(tok, prompts, subjects, "right")  # in each prompt's own tokens
    positions = [start + j for start, j in zip(batch.starts, at)]
    ids, mask = batch.input_ids, batch.attention_mask
    n, T = mask.shape
    pred_mask = (batch.labels[:, :-1] != -100).float()  # the logit at j predicts a target token (token j + 1)
    first = int(pred_mask.argmax(1).min())  # earliest logit that predicts a target token
    keep = (T - 1) - first
    # the window is the last keep + 1 positions; the last one predicts nothing (no next token).
    target_ids = torch.cat([ids[:, first + 1:], torch.zeros(n, 1, dtype=ids.dtype)], 1)
    target_mask = torch.cat([pred_mask[:, first:], torch.zeros(n, 1)], 1)
    inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(1) - 1).clamp(min=0)}
    return TargetBatch({k: v.to(device) for k, v in inputs.items()}, positions, target_ids.to(device),
                       target_mask.to(device), keep + 1)


def target_nll(model: Any, adapter: ModelAdapter, batch: TargetBatch) -> torch.Tensor:
    """Per-row mean NLL of the target tokens, from one pass of the model over `batch`.

    The head runs only at the logits that predict a target token: on SmolLM2 (49k-token vocabulary) the head over
    every kept position of every row, forward and backward, was a third of a KRD training step.
    """
    # the base model (no head): its last hidden state is the final norm's output in every adapted family
    hidden = model.base_model(**batch.inputs, use_cache=False).last_hidden_state
    at = batch.target_mask.bool()
    hidden = hidden[:, -batch.keep:][at]  # (target tokens, d)
    logp = adapter.get(model, adapter.lm_head)(hidden).float().log_softmax(-1)
    nll = -logp.gather(-1, batch.target_ids[at].unsqueeze(-1)).squeeze(-1)
    rows = at.nonzero()[:, 0]
    return nll.new_zeros(at.shape[0]).index_add(0, rows, nll) / batch.target_mask.sum(1)


def substituted_nll(model: Any, adapter: ModelAdapter, layer: int, batch: TargetBatch,
                    vectors: torch.Tensor | None) -> torch.Tensor:
    """Per-row mean NLL of the target with h_s replaced by `vectors` (n, d) after block `layer` (None: the clean
    model)."""
    with block_output(model, adapter, layer, batch.subject_positions, replace=vectors):
        return target_nll(model, adapter, batch)


class PrefixCache:
    """The frozen model's residual stream after block `layer` at every position of each row, computed once per row.

    L_con substitutes a component only after block `layer`, so the blocks up to `layer` give the same states in every
    epoch; `suffix_nll` then runs only the blocks after `layer`. Rows are keyed by their token ids (unpadded) and
    stored unpadded, so a row cached in one chunk is reused, left-padded, in any other.
    """

    def __init__(self, model: Any, adapter: ModelAdapter, layer: int, dtype: torch.dtype | None = None):
        self.model, self.adapter, self.layer = model, adapter, layer
        self.dtype = dtype  # None: the model's dtype
        self.rows: dict[tuple[int, ...], torch.Tensor] = {}
        self.computed = 0  # rows run through the prefix (for benchmarks)

    @torch.no_grad()
    def states(self, batch: TargetBatch) -> torch.Tensor:
        """(n, T, d) states after block `layer` for the rows of `batch`, left-padded like it (zeros on padding)."""
        ids, mask = batch.inputs["input_ids"], batch.inputs["attention_mask"].bool()
        keys = [tuple(ids[i][mask[i]].tolist()) for i in range(len(ids))]
        missing = [i for i, k in enumerate(keys) if k not in self.rows]
        if missing:
            sub = {k: v[missing] for k, v in batch.inputs.items()}
            with block_output(self.model, self.adapter, self.layer, None, stop=True) as site:
                run_until(self.model, **sub, use_cache=False)
            for j, i in enumerate(missing):
                self.rows[keys[i]] = site.value[j][mask[i]].to(self.dtype or site.value.dtype).clone()
            self.computed += len(missing)
        first = self.rows[keys[0]]
        out = first.new_zeros(len(keys), ids.shape[1], first.shape[-1])
        for i, k in enumerate(keys):
            h = self.rows[k]
            out[i, ids.shape[1] - len(h):] = h
        return out


def suffix_nll(model: Any, adapter: ModelAdapter, layer: int, batch: TargetBatch, states: torch.Tensor,
               vectors: torch.Tensor | None) -> torch.Tensor:
    """`substituted_nll` from cached states after block `layer` (PrefixCache.states): only the later blocks run.

    The blocks up to `layer` are taken out of the model for the call; the embeddings still run (to give the
    masks and positions their shapes) but their output is replaced by `states` at the first remaining block.
    """
    parent_path, name = adapter.blocks.rsplit(".", 1)
    parent = model.get_submodule(parent_path)
    blocks = getattr(parent, name)
    param = next(model.parameters())
    h = states.to(param.device, param.dtype)
    if vectors is not None:
        rows = torch.arange(h.shape[0], device=h.device)
        cols = torch.as_tensor(list(batch.subject_positions), device=h.device)
        h = h.index_put((rows, cols), vectors.to(h.dtype))
    entry = blocks[layer + 1] if layer + 1 < len(blocks) else model.get_submodule(adapter.final_norm)

    def feed(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            return (h, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": h}

    handle = entry.register_forward_pre_hook(feed, with_kwargs=True)
    setattr(parent, name, torch.nn.ModuleList(list(blocks)[layer + 1:]))
    try:
        return target_nll(model, adapter, batch)
    finally:
        setattr(parent, name, blocks)
        handle.remove()
