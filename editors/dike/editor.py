"""DiKE's edit, DKE (METHOD.md §5.2), on the shared locate-and-edit machinery.

For each request, at the edit layer l (one layer):
  z_r, z_u = KRD(h_s, h_r) of the bare edit prompt;
  δ* = argmin NLL(o*) with h_s*(δ) = W5(z_r + δ) + W6 z_u in place of h_s (the shared v* optimiser, with the
       same prefixes, KL term, decay, clamp and early stop as MEMIT; the shift h_s*(δ) − h_s is applied in
       every prefixed context, as MEMIT applies its δ);
  v* = h_s*(δ*) − h_s^p, h_s^p = h_s − W k, so the residual is R = v* − W k = h_s*(δ*) − h_s (MEMIT's convention);
  Δ = (W3ᵀW3 + I)⁻¹ R K*ᵀ (λC + K* K*ᵀ)⁻¹ with keys/residuals of a batch stacked column-wise.
Ablations: no_tke takes R from MEMIT's v* on the entangled h_s; no_fik drops (W3ᵀW3 + I)⁻¹; no_ctr / no_kc
load the KRD trained without that loss (`fineked train-krd --no-ctr` / `--no-kc`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from editors.adapters import ModelAdapter
from editors.base import EditRequest, EditResult, weights_digest
from editors.dike.checkpoint import KRDCheckpointError, checkpoint_dir, load_krd
from editors.dike.solve import dike_delta
from editors.dike.states import subject_and_relation_states
from editors.hparams import HparamsError, load_hparams, read_yaml
from editors.locate.editor import LocateEditor, Timer
from editors.locate.fingerprint import model_fingerprint
from editors.locate.hooks import block_output
from editors.locate.keys import compute_keys
from editors.locate.vstar import optimise_target_value
from editors.locate.vstar_cache import model_state_digest, target_value
from editors.memit import MemitHparams


@dataclass
class DikeHparams(MemitHparams):
    """MEMIT's hparams (same keys, statistics, λ and v* settings) plus the KRD and the ablation flags."""

    repr_layer: int | None = None  # l_r; None: the adapter's default (~75 % depth)
    krd_path: str | None = None  # a checkpoint folder; None: the cache's folder for this model, layers and variant
    no_ctr: bool = False
    no_kc: bool = False
    no_tke: bool = False
    no_fik: bool = False
    # [open] h_s*(δ) = W5(z_r + δ) + W6 z_u (the paper) carries the KRD's reconstruction error ĥ_s − h_s into v*.
    # True adds the residual h_s − ĥ_s back, so only W5 δ is written into the weights.
    keep_recon_residual: bool = False
    # [open] what the v* norm clamp and decay act on: "z_r" clamps |δ| <= c|z_r| (the optimiser applied literally to
    # δ); "h_s" clamps |W5 δ| <= c|h_s|, the step that actually reaches the residual stream, i.e. MEMIT's budget.
    clamp_on: str = "z_r"

    def __post_init__(self) -> None:
        if self.clamp_on not in ("z_r", "h_s"):
            raise HparamsError(f"dike: clamp_on must be 'z_r' or 'h_s', got {self.clamp_on!r}; "
                               "fix it with --set clamp_on=z_r")

    @property
    def krd_variant(self) -> str:
        flags = [f for f in ("no_ctr", "no_kc") if getattr(self, f)]
        return "+".join(flags) or "full"


def model_name(model: Any) -> str:
    return str(getattr(model.config, "name_or_path", "") or "MODEL").rstrip("/").split("/")[-1] or "MODEL"


class DikeEditor(LocateEditor):
    name = "dike"
    Hparams = DikeHparams

    def __init__(self, hparams: Any | None = None):
        super().__init__(hparams)
        self._krd: dict[tuple, Any] = {}

    @classmethod
    def from_config(cls, model_key: str, overrides: dict[str, Any] | None = None) -> "DikeEditor":
        """MEMIT's YAML for model_key, then dike's (layers, l_r), then overrides: same keys, C, λ and v* as memit."""
        memit = {k: v for k, v in read_yaml("memit", model_key).items() if k != "layers"}
        return cls(load_hparams(DikeHparams, "dike", model_key, overrides, base=memit))

    def default_layers(self, n_layers: int, adapter: ModelAdapter) -> list[int]:
        return [adapter.default_edit_layer(n_layers)]

    def repr_layer(self, model: Any, adapter: ModelAdapter) -> int:
        n = adapter.n_layers(model)
        return self.hparams.repr_layer if self.hparams.repr_layer is not None else adapter.default_repr_layer(n)

    def krd_dir(self, model: Any, layer: int, repr_layer: int) -> Path:
        if self.hparams.krd_path:
            return Path(self.hparams.krd_path)
        return checkpoint_dir(model_fingerprint(model), layer, repr_layer, self.hparams.krd_variant)

    def load_krd(self, model: Any, layer: int, repr_layer: int) -> Any:
        path = self.krd_dir(model, layer, repr_layer)
        key = (str(path), model_fingerprint(model), layer, repr_layer)
        if key not in self._krd:
            name = model_name(model)
            flags = "".join(f" --{f.replace('_', '-')}" for f in ("no_ctr", "no_kc") if getattr(self.hparams, f))
            if not (path / "krd.safetensors").exists():
                raise KRDCheckpointError(f"dike needs a KRD for {name} at layers l={layer}, l_r={repr_layer}; "
                                         f"run `fineked train-krd --model {name}{flags}` (or --set krd_path=DIR)")
            self._krd[key] = load_krd(path, model_fingerprint(model), layer, repr_layer, name)
        return self._krd[key]

    def edit(self, model: Any, tok: Any, adapter: ModelAdapter, layers: list[int], requests: Sequence[EditRequest],
             prefixes: list[str], stats: dict[int, torch.Tensor], result: EditResult, timer: Timer) -> None:
        hp = self.hparams
        if len(layers) != 1:
            raise ValueError(f"dike edits one layer (h_s's layer l); got layers={layers}. Use --set layers=[l]")
        layer = layers[0]
        l_r = self.repr_layer(model, adapter)
        krd = None if (hp.no_tke and hp.no_fik) else self.load_krd(model, layer, l_r)
        residuals, steps = [], []
        # nothing is applied before every residual is known, so one digest of the model serves the whole batch
        digest = model_state_digest(model) if self.vstar_cache is not None else None
        for req in requests:
            with timer("vstar"):
                if hp.no_tke:  # w/o TKE: MEMIT's v* on the entangled h_s
                    tv = target_value(model, tok, adapter, layer, req, prefixes, hp.vstar(), "block_output",
                                      self.vstar_cache, digest)
                    residuals.append(tv.delta)
                else:
                    residual, tv = self.related_component_residual(model, tok, adapter, layer, l_r, krd.krd, req,
                                                                   prefixes, digest)
                    residuals.append(residual)
            steps.append(tv.steps)
        R = torch.stack(residuals, dim=1)  # (d, n)
        with timer("keys"):
            K = compute_keys(model, tok, adapter, layer, requests, prefixes).T  # (d_in, n)
        with timer("solve"):
            C = stats[layer].to(device=K.device, dtype=torch.float64)
            W3 = None if hp.no_fik else krd.krd.W3.weight.detach().to(K.device)
            delta = dike_delta(R.to(K.device), K, C, hp.mom2_update_weight, W3, self.stats_factor(stats[layer], K.device))
            self.add_delta(model, adapter, layer, delta)
        result.info.update(vstar_steps=steps, repr_layer=l_r, krd=None if krd is None else str(krd.directory),
                           residual_norms=[float(r.norm()) for r in residuals])

    def related_component_residual(self, model: Any, tok: Any, adapter: ModelAdapter, layer: int, l_r: int, krd: Any,
                                   req: EditRequest, prefixes: list[str],
                                   digest: str | None = None) -> tuple[torch.Tensor, Any]:
        """(h_s*(δ*) − h_s, the optimiser's TargetValue) for one request, δ* optimised on z_r only."""
        h_s, h_r = subject_and_relation_states(model, tok, adapter, layer, l_r, [req.prompt], [req.subject])
        device = next(model.parameters()).device
        h_s, h_r = h_s[0].to(device), h_r[0].to(device)
        krd = krd.to(device)
        with torch.no_grad():
            z_r, z_u = krd.components(h_s, h_r)

        base = krd.recompose(z_r, z_u) if self.hparams.keep_recon_residual else h_s

        def shift(delta: torch.Tensor) -> torch.Tensor:
            return krd.recompose(z_r + delta, z_u) - base

        def intervention(delta: torch.Tensor, positions: Sequence[int]):
            return block_output(model, adapter, layer, positions, add=shift(delta))

        if self.hparams.clamp_on == "h_s":
            init, step_map = h_s, (lambda delta: delta @ krd.W5.weight.T)  # W5 without its bias
        else:
            init, step_map = z_r, None
        hp = self.hparams

        def optimise() -> Any:
            return optimise_target_value(model, tok, adapter, layer, req, prefixes, hp.vstar(),
                                         intervention=intervention, init=init, step_map=step_map)
        # the memo's key must name what the intervention reads: dike and dike[no_fik] (same KRD) share entries
        variant = None if self.vstar_cache is None else {
            "krd": weights_digest(krd), "repr_layer": l_r, "clamp_on": hp.clamp_on,
            "keep_recon_residual": hp.keep_recon_residual}
        tv = target_value(model, tok, adapter, layer, req, prefixes, hp.vstar(), "dike:z_r", self.vstar_cache,
                          digest, optimise=optimise, variant=variant)
        with torch.no_grad():
            return shift(tv.delta.to(device)).float().cpu(), tv
