"""MEMIT (Meng et al. 2023): spread each edit over a range of FFN layers; MEMIT-C adds preserved facts.

  z_i = h_L + δ_i, the residual after the last layer L of the range that makes the model say o*_i;
  for each layer l of the range, in order:
    K = keys at l (averaged over prefixes), R = (Z − h_L(current model)) / (layers left),
    Δ = R Kᵀ (λC + K Kᵀ)⁻¹ in float64  (MEMIT-C: + K_p K_pᵀ for the subject's preserved facts).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from editors.adapters import ModelAdapter
from editors.base import EditRequest, EditResult
from editors.locate.editor import LocateEditor, LocateHparams, Timer, subject_states, vstar_diagnostics, \
    written_diagnostics
from editors.locate.keys import block_outputs_at_subject, compute_keys
from editors.locate.solve import memit_delta
from editors.locate.vstar import TargetValue
from editors.locate.vstar_cache import model_state_digest, target_value


@dataclass
class MemitHparams(LocateHparams):
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
            w = adapter.ffn_out_weight(model, layer)
            with torch.no_grad():
                w.add_(adapter.delta_to_param(delta).to(device=w.device, dtype=w.dtype))
    if not tvs:
        return []
    after = subject_states(model, tok, adapter, layers[-1], requests)
    written = written_diagnostics(before, after, torch.stack([tv.delta for tv in tvs]))
    return [{**vstar_diagnostics(tv), **w} for tv, w in zip(tvs, written)]


class MemitEditor(LocateEditor):
    name = "memit"
    Hparams = MemitHparams

    def default_layers(self, n_layers: int, adapter: ModelAdapter) -> list[int]:
        return default_range(n_layers, adapter, self.hparams.layer_span)

    def edit(self, model: Any, tok: Any, adapter: ModelAdapter, layers: list[int], requests: Sequence[EditRequest],
             prefixes: list[str], stats: dict[int, torch.Tensor], result: EditResult, timer: Timer) -> None:
        hp = self.hparams
        Z, tvs = target_residuals(model, tok, adapter, layers[-1], requests, prefixes, hp, timer, self.vstar_cache)
        keep: dict[int, torch.Tensor | None] = {}
        with timer("keys"):  # preserved keys from the unedited model, as C is
            for layer in layers:
                keep[layer] = self.keep_keys(model, tok, adapter, layer, requests, prefixes)

        def layer_delta(i: int, layer: int, R: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
            C = stats[layer].to(device=K.device, dtype=torch.float64)
            return memit_delta(R, K, C, hp.mom2_update_weight, keep[layer], self.stats_factor(stats[layer], K.device))

        diags = spread_update(model, tok, adapter, layers, requests, prefixes, Z, timer, layer_delta, tvs)
        result.info.update(vstar_steps=[tv.steps for tv in tvs], vstar_nll=[(tv.nll_init, tv.nll) for tv in tvs],
                           diagnostics=diags)


class MemitCEditor(MemitEditor):
    """MEMIT with the edited subject's other (held-out) facts as preservation constraints."""

    name = "memit_c"
    uses_preserved = True
