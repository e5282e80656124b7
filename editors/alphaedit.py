"""AlphaEdit (Fang et al. 2025): MEMIT's spreading with the update projected onto the null space of C.

  P = U Uᵀ over C's eigenvectors with eigenvalue < nullspace_threshold (editors.locate.projector: eigh on the
  model's device, cached on disk by the digest of C);
  Δ = R Kᵀ P (K Kᵀ P + K_p K_pᵀ P + L2·I)⁻¹, K_p the keys of earlier edits of this editor instance.
K_p is editor state: apply() appends to it, EditResult.restore() takes the edit's keys back out (so the runner's
restore-after-each-case mode sees no stale keys), and reset() clears it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from editors.adapters import ModelAdapter
from editors.base import EditRequest, EditResult, RunOptions
from editors.locate.editor import LocateEditor, Timer
from editors.locate.projector import cached_projector
from editors.locate.solve import alphaedit_delta
from editors.locate.spread import MemitHparams, default_range, edit_diagnostics, remaining, spread_update, \
    target_residuals


@dataclass
class AlphaEditHparams(MemitHparams):
    nullspace_threshold: float = 2e-2  # upstream AlphaEdit
    L2: float = 10.0  # upstream AlphaEdit
    context_prefixes: list[list[int]] = field(default_factory=lambda: [[10, 5]])


@dataclass
class AlphaEditResult(EditResult):
    """An EditResult whose restore() also withdraws the edit's keys from the editor's accumulated K_p."""

    editor: Any = None
    added: dict[int, int] = field(default_factory=dict)  # layer -> number of key columns this edit appended

    def restore(self, model: torch.nn.Module) -> None:
        super().restore(model)
        if self.editor is not None:
            self.editor._withdraw(self.added)
            self.added = {}


class AlphaEditEditor(LocateEditor):
    name = "alphaedit"
    Hparams = AlphaEditHparams

    def __init__(self, hparams: Any | None = None, options: RunOptions = RunOptions()):
        super().__init__(hparams, options)
        self._projectors: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # -> (C, P on the model's device)
        self.prev_keys: dict[int, torch.Tensor] = {}  # layer -> (d_in, N) keys of earlier edits still in place

    def reset(self) -> None:
        """Forget earlier edits' keys (call when the model is reloaded or restored outside EditResult)."""
        self.prev_keys = {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """K_p per layer, so a saved sequential run can go on (harness.rundir.SequentialState)."""
        return {f"prev_keys.{layer}": K for layer, K in self.prev_keys.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.prev_keys = {int(k.split(".")[1]): v for k, v in state.items() if k.startswith("prev_keys.")}

    def _withdraw(self, added: dict[int, int]) -> None:
        for layer, n in added.items():
            if layer in self.prev_keys and n:
                self.prev_keys[layer] = self.prev_keys[layer][:, :-n]

    def default_layers(self, n_layers: int, adapter: ModelAdapter) -> list[int]:
        return default_range(n_layers, adapter, self.hparams.layer_span)

    def new_result(self, model: Any, adapter: ModelAdapter, layers: Sequence[int]) -> EditResult:
        base = super().new_result(model, adapter, layers)
        return AlphaEditResult(originals=base.originals, editor=self)

    def projector(self, model: Any, layer: int, C: torch.Tensor) -> torch.Tensor:
        """P for `layer` on the model's device: from memory, else editors.locate.projector (disk, or eigh there)."""
        hp = self.hparams
        device = next(model.parameters()).device
        key = (id(C), layer, hp.nullspace_threshold, str(device))
        hit = self._projectors.get(key)
        if hit is not None and hit[0] is C:  # id() alone could name a freed C's successor
            return hit[1]
        if hp.stats_corpus == "identity":
            P = torch.eye(C.shape[0], dtype=torch.float64, device=device) * float(1.0 < hp.nullspace_threshold)
        else:
            P = cached_projector(C, hp.nullspace_threshold, device)
        self._projectors[key] = (C, P)
        return P

    def edit(self, model: Any, tok: Any, adapter: ModelAdapter, layers: list[int], requests: Sequence[EditRequest],
             prefixes: list[str], stats: dict[int, torch.Tensor], result: EditResult, timer: Timer) -> None:
        hp = self.hparams
        with timer("stats"):
            P = {l: self.projector(model, l, stats[l]) for l in layers}
        Z, tvs = target_residuals(model, tok, adapter, layers[-1], requests, prefixes, hp, timer, self.vstar_cache)
        new_keys: dict[int, torch.Tensor] = {}

        def layer_delta(i: int, layer: int, R: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
            new_keys[layer] = K.detach().to("cpu", torch.float64)
            prev = self.prev_keys.get(layer)
            Pl = P[layer].to(device=K.device, dtype=torch.float64)
            return alphaedit_delta(R, K, Pl, None if prev is None else prev.to(K.device), hp.L2)

        before, after = spread_update(model, tok, adapter, layers, requests, prefixes, timer,
                                      remaining(model, tok, adapter, layers, requests, Z), layer_delta)
        for layer, K in new_keys.items():  # sequential editing: later edits must also keep these outputs
            prev = self.prev_keys.get(layer)
            self.prev_keys[layer] = K if prev is None else torch.cat([prev, K], dim=1)
        result.added = {l: K.shape[1] for l, K in new_keys.items()}
        result.info.update(vstar_steps=[tv.steps for tv in tvs], vstar_nll=[(tv.nll_init, tv.nll) for tv in tvs],
                           null_dims={l: int(torch.trace(P[l]).round()) for l in layers},
                           diagnostics=edit_diagnostics(tvs, before, after))
