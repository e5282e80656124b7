"""MEMIT's spreading of edits over a range of FFN layers, shared by MEMIT, MEMIT-C and AlphaEdit.

It reads like kmeng01/memit's execute_memit, top to bottom:
  1. target_residuals: z_i, the residual after the last layer L of the range that makes the model say o*_i (v*);
  2. spread_update, for each layer l of the range in order: the keys K at l, the residual still missing at L,
     R = (Z − h_L(current model)) / (layers left), the editor's closed form Δ = layer_delta(i, l, R, K) (MEMIT's,
     AlphaEdit's), written into l's FFN output weight before the next layer's keys are read;
  3. the diagnostics: how much of each z_i − h_L the whole update wrote.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from editors.adapters import ModelAdapter
from editors.base import EditRequest
from editors.locate.editor import LocateHparams, Timer, subject_states, vstar_diagnostics, written_diagnostics
from editors.locate.keys import block_outputs_at_subject, compute_keys
from editors.locate.vstar import TargetValue
from editors.locate.vstar_cache import model_state_digest, target_value


def default_range(n_layers: int, adapter: ModelAdapter, span: int) -> list[int]:
    last = max(adapter.default_edit_layer(n_layers), min(span - 1, n_layers - 1))
    return list(range(max(0, last - span + 1), last + 1))


def target_residuals(model: Any, tok: Any, adapter: ModelAdapter, z_layer: int, requests: Sequence[EditRequest],
                     prefixes: list[str], hp: LocateHparams, timer: Timer,
                     memo: Path | None = None) -> tuple[torch.Tensor, list[TargetValue]]:
    """(d, n) target residuals z_i at the last subject token after block z_layer (through the v* memo folder `memo`)."""
    with timer("vstar"):
        digest = model_state_digest(model) if memo is not None else None  # every z_i is optimised on this model
        tvs = [target_value(model, tok, adapter, z_layer, r, prefixes, hp.vstar(), "block_output", memo, digest)
               for r in requests]
    return torch.stack([tv.target for tv in tvs], dim=1), tvs


def spread_update(model: Any, tok: Any, adapter: ModelAdapter, layers: list[int], requests: Sequence[EditRequest],
                  prefixes: list[str], Z: torch.Tensor, timer: Timer, layer_delta: Any,
                  tvs: Sequence[TargetValue] = ()) -> list[dict[str, Any]]:
    """The shared MEMIT/AlphaEdit loop: at each layer, the remaining residual's share goes into that layer.

    layer_delta(i, layer, R, K) -> Δ (d_out, d_in) float64. Returns per-request diagnostics: the v* end state of
    `tvs` and how much of each z − h_L the whole update wrote at h_L (editors.locate.editor.written_diagnostics).
    """
    pairs = [(r.prompt, r.subject) for r in requests]
    before = subject_states(model, tok, adapter, layers[-1], requests)
    for i, layer in enumerate(layers):
        with timer("keys"):
            K = compute_keys(model, tok, adapter, layer, requests, prefixes).T  # (d_in, n)
            cur = block_outputs_at_subject(model, tok, adapter, layers[-1], pairs).T  # (d, n)
        R = (Z.to(cur) - cur) / (len(layers) - i)
        with timer("solve"):
            delta = layer_delta(i, layer, R, K)
            adapter.add_to_ffn_out(model, layer, delta)
    if not tvs:
        return []
    after = subject_states(model, tok, adapter, layers[-1], requests)
    written = written_diagnostics(before, after, torch.stack([tv.delta for tv in tvs]))
    return [{**vstar_diagnostics(tv), **w} for tv, w in zip(tvs, written)]
