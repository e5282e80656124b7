"""ROME (Meng et al. 2022): a rank-one update of one FFN output matrix per edit; ROME-C adds preserved facts.

For each request, in turn (as upstream ROME applies a batch):
  k* = mean key at the last subject token over the bare prompt and the context prefixes;
  δ  = the change of the FFN output there that makes the model say o* (editors.locate.vstar);
  v* = W k* + δ;   Ŵ = W + (v* − W k*)(C⁻¹k*)ᵀ / ((C⁻¹k*)ᵀ k*).
ROME-C replaces C by λC + w K_p K_pᵀ, K_p the keys of the subject's preserved facts (EditRequest.preserve) and w
`preserve_weight`. ROME writes v* at k* exactly whatever C is, so only the preserved keys' share of λC + w K_p K_pᵀ
matters: with λ = 15000 and w = 1 they weigh nothing (an earlier ROME-C equalled ROME to ±0.3 points); the -C YAMLs
set w in proportion to λ. A preserved key equal to k* (a prompt that starts with the subject, as the edit's does)
cannot be kept: the update must move k*.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from editors.adapters import ModelAdapter
from editors.base import EditRequest, EditResult
from editors.locate.editor import LocateEditor, LocateHparams, Timer
from editors.locate.keys import compute_keys
from editors.locate.solve import rome_delta
from editors.locate.spread import edit_diagnostics, spread_update
from editors.locate.vstar_cache import target_value


@dataclass
class RomeHparams(LocateHparams):
    pass


class RomeEditor(LocateEditor):
    name = "rome"
    Hparams = RomeHparams

    def edit(self, model: Any, tok: Any, adapter: ModelAdapter, layers: list[int], requests: Sequence[EditRequest],
             prefixes: list[str], stats: dict[int, torch.Tensor], result: EditResult, timer: Timer) -> None:
        hp = self.hparams
        layer = layers[0]
        C = stats[layer]
        steps, nlls, diags = [], [], []
        for req in requests:
            with timer("keys"):
                k = compute_keys(model, tok, adapter, layer, [req], prefixes)[0]
                K_keep = self.keep_keys(model, tok, adapter, layer, [req], prefixes)
            with timer("vstar"):
                tv = target_value(model, tok, adapter, layer, req, prefixes, hp.vstar(), "ffn_output", self.vstar_cache)

            def layer_delta(i: int, layer: int, R: torch.Tensor, K: torch.Tensor, K_keep=K_keep) -> torch.Tensor:
                # v* = W k* + δ, and rome_delta takes v* − W k* from W itself, as upstream ROME
                W = adapter.weight_as_out_in(adapter.ffn_out_weight(model, layer)).to(torch.float64)
                k64 = K[:, 0].to(W)
                C_eff = C.to(W)
                if K_keep is not None:
                    K_keep = K_keep.to(W)
                    C_eff = hp.mom2_update_weight * C_eff + K_keep @ K_keep.T
                return rome_delta(W, C_eff, k64, W @ k64 + R[:, 0].to(W))

            # the FFN output adds to the residual stream, so v*'s shift at the FFN output is its shift of h_s
            before, after = spread_update(model, tok, adapter, [layer], [req], prefixes, timer,
                                          lambda i: tv.delta[:, None], layer_delta, keys=k[:, None])
            steps.append(tv.steps)
            nlls.append((tv.nll_init, tv.nll))
            diags.extend(edit_diagnostics([tv], before, after))
        result.info.update(vstar_steps=steps, vstar_nll=nlls, diagnostics=diags)


class RomeCEditor(RomeEditor):
    """ROME with the edited subject's other (held-out) facts as preservation constraints."""

    name = "rome_c"
    uses_preserved = True
