"""The MEMIT family's core, shared by ROME, MEMIT, AlphaEdit, their -C variants and DiKE.

It reads like kmeng01/memit's execute_memit, top to bottom:
  1. target_residuals: z_i, the residual after the last layer L of the range that makes the model say o*_i (v*);
  2. spread_update, for each layer l of the range in order: the keys K at l, the residual R that l must write
     (MEMIT's spreading: remaining(Z), the share (Z − h_L(current model)) / (layers left) of what is still missing
     at L; ROME and DiKE edit one layer and give their own R), the editor's closed form Δ = layer_delta(i, l, R, K)
     (ROME's, MEMIT's, AlphaEdit's, DiKE's), written into l's FFN output weight before the next layer's keys are read;
  3. edit_diagnostics: the v* end state and how much of each v* shift the whole update wrote at L.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from editors.adapters import ModelAdapter
from editors.base import EditRequest
from editors.locate.editor import LocateHparams, Timer, subject_states, vstar_diagnostics, written_diagnostics
from editors.locate.keys import block_outputs_at_subject, compute_keys
from editors.locate.vstar import TargetValue
from editors.locate.vstar_cache import model_state_digest, target_value


@dataclass
class MemitHparams(LocateHparams):
    """The hparams MEMIT, MEMIT-C, AlphaEdit and DiKE share (same keys, statistics, λ and v* settings)."""

    clamp_norm_factor: float = 0.75
    context_prefixes: list[list[int]] = field(default_factory=lambda: [[10, 5]])  # MEMIT's context templates
    mom2_update_weight: float = 15000.0
    layer_span: int = 3  # with layers=None: this many layers ending at the adapter's default edit layer


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


def remaining(model: Any, tok: Any, adapter: ModelAdapter, layers: list[int], requests: Sequence[EditRequest],
              Z: torch.Tensor) -> Callable[[int], torch.Tensor]:
    """MEMIT's residual for the i-th layer of the range: (Z − h_L(current model)) / (layers left), (d, n)."""
    pairs = [(r.prompt, r.subject) for r in requests]

    def residual(i: int) -> torch.Tensor:
        cur = block_outputs_at_subject(model, tok, adapter, layers[-1], pairs).T  # (d, n)
        return (Z.to(cur) - cur) / (len(layers) - i)
    return residual


def spread_update(model: Any, tok: Any, adapter: ModelAdapter, layers: list[int], requests: Sequence[EditRequest],
                  prefixes: list[str], timer: Timer, residual: Callable[[int], torch.Tensor],
                  layer_delta: Callable[[int, int, torch.Tensor, torch.Tensor], torch.Tensor],
                  keys: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Write the edit layer by layer: at layers[i], Δ = layer_delta(i, layer, residual(i), K) with K (d_in, n) the
    keys there, read after the earlier layers' writes. `keys`: K at layers[0] where the caller has read it already
    (the model is unchanged until the first write). Returns h_L at each request's bare prompt before and after, (n, d),
    for edit_diagnostics."""
    before = subject_states(model, tok, adapter, layers[-1], requests)
    for i, layer in enumerate(layers):
        with timer("keys"):
            K = keys if i == 0 and keys is not None else compute_keys(model, tok, adapter, layer, requests, prefixes).T
            R = residual(i)
        with timer("solve"):
            adapter.add_to_ffn_out(model, layer, layer_delta(i, layer, R, K))
    return before, subject_states(model, tok, adapter, layers[-1], requests)


def edit_diagnostics(tvs: Sequence[TargetValue], before: torch.Tensor, after: torch.Tensor,
                     shifts: torch.Tensor | None = None) -> list[dict[str, Any]]:
    """Per request: the v* end state and how much of its shift of h_L the update wrote (written_diagnostics).
    shifts (n, d): the shift each v* optimisation applied to h_L, where it is not the TargetValue's delta (DiKE)."""
    shifts = torch.stack([tv.delta for tv in tvs]) if shifts is None else shifts
    return [{**vstar_diagnostics(tv), **w} for tv, w in zip(tvs, written_diagnostics(before, after, shifts))]
