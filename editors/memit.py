"""MEMIT (Meng et al. 2023): spread each edit over a range of FFN layers; MEMIT-C adds preserved facts.

  z_i = h_L + δ_i, the residual after the last layer L of the range that makes the model say o*_i;
  for each layer l of the range, in order:
    K = keys at l (averaged over prefixes), R = (Z − h_L(current model)) / (layers left),
    Δ = R Kᵀ (λC + K Kᵀ)⁻¹ in float64  (MEMIT-C: + K_p K_pᵀ for the subject's preserved facts).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from editors.adapters import ModelAdapter
from editors.base import EditRequest, EditResult
from editors.locate.editor import LocateEditor, Timer
from editors.locate.solve import memit_delta
from editors.locate.spread import MemitHparams, default_range, edit_diagnostics, remaining, spread_update, \
    target_residuals


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

        before, after = spread_update(model, tok, adapter, layers, requests, prefixes, timer,
                                      remaining(model, tok, adapter, layers, requests, Z), layer_delta)
        result.info.update(vstar_steps=[tv.steps for tv in tvs], vstar_nll=[(tv.nll_init, tv.nll) for tv in tvs],
                           diagnostics=edit_diagnostics(tvs, before, after))


class MemitCEditor(MemitEditor):
    """MEMIT with the edited subject's other (held-out) facts as preservation constraints."""

    name = "memit_c"
    uses_preserved = True
