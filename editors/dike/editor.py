"""DiKE's edit, DKE (METHOD.md §5.2), on the MEMIT family's core (editors.locate.spread).

For each request, at the edit layer l (one layer), with A = μ W3ᵀW3 + I and the key k of the request:
  z_r, z_u = KRD(h_s, h_r) of the bare edit prompt;
  R(δ) = W5(z_r + δ) + W6 z_u − ĥ_s = W5 δ   (keep_recon_residual: the KRD's reconstruction error ĥ_s − h_s is not
        part of the edit; the paper's literal h_s*(δ) − h_s = W5 δ + (ĥ_s − h_s) is the flag's False);
  the closed form Δ = A⁻¹ R kᵀ(λC + kkᵀ)⁻¹ changes h_s (at the key k) by Δk = s A⁻¹ R, s = kᵀ(λC + kkᵀ)⁻¹k < 1
        (editors.locate.solve.written_share): on SmolLM2 at λ = 1500, s ≈ 0.6 and ‖A⁻¹R‖ ≈ 0.7‖R‖;
  so δ* = argmin NLL(o*) + KL + decay with the shift the closed form will write applied to h_s (through_shrink):
        the optimiser sees the model the closed form will produce, and the value actually written is the one that
        predicted o*. k is MEMIT's key averaged over the contexts, but each row j of the v* batch (bare prompt,
        prefixed prompts, KL prompt) has its own key k_j, where the update writes s_j A⁻¹ R with
        s_j = k_jᵀ(λC + kkᵀ)⁻¹k (editors.locate.solve.written_share_at); so row j gets s_j A⁻¹ R(δ). On SmolLM2 a
        bare prompt that starts with the subject has s_j as low as 0.1-0.2 against s ≈ 0.6: one scalar s would
        predict a shift there that the update writes only a fifth of.
        The norm clamp bounds the bare prompt's shift by clamp_norm_factor‖h_s‖ (clamp_on="h_s", MEMIT's budget);
        R itself is larger by 1/(s_bare·shrink of A⁻¹);
  Δ = A⁻¹ R K*ᵀ (λC + K* K*ᵀ)⁻¹ with keys/residuals of a batch stacked column-wise. In a batch each δ is optimised
        with its own one-edit s; the cross terms between the batch's keys are not compensated.
The KL reference is the clean model's distribution (kl_reference="clean"). The shift is applied in every prefixed
context, as MEMIT applies its δ; k is the key averaged over those contexts.
Old behaviours, for the ablation table: clamp_on="z_r" (‖δ‖ ≤ c‖z_r‖), keep_recon_residual=False,
through_shrink=False (δ optimised with R itself applied), kl_reference="substituted" (with ĥ_s substituted).
Ablations: no_tke takes R from a δ on the entangled h_s (MEMIT's v*, through the same shrink); no_fik drops A⁻¹;
no_ctr / no_kc load the KRD trained without that loss (`fineked train-krd --no-ctr` / `--no-kc`).
"""
from __future__ import annotations

import functools
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from editors.adapters import ModelAdapter
from editors.base import EditRequest, EditResult, RunOptions, weights_digest
from editors.dike import krd as krd_code, states as states_code
from editors.dike.checkpoint import KRDCheckpointError, checkpoint_dir, load_krd
from editors.dike.solve import dike_delta, fik_matrix
from editors.dike.states import subject_and_relation_states
from editors.hparams import HparamsError, load_hparams, read_yaml
from editors.locate.editor import LocateEditor, Timer
from editors.locate.fingerprint import model_fingerprint
from editors.locate.hooks import block_output
from editors.locate.keys import compute_keys, vstar_row_keys
from editors.locate.solve import written_share, written_share_at
from editors.locate.spread import MemitHparams, edit_diagnostics, spread_update
from editors.locate.vstar import optimise_target_value
from editors.locate.vstar_cache import model_state_digest, source_digest, target_value


@dataclass
class DikeHparams(MemitHparams):
    """MEMIT's hparams (same keys, statistics, λ and v* settings) plus the KRD and the ablation flags."""

    repr_layer: int | None = None  # l_r; None: the adapter's default (~75 % depth)
    krd_path: str | None = None  # a checkpoint folder; None: the cache's folder for this model, layers and variant
    no_ctr: bool = False
    no_kc: bool = False
    no_tke: bool = False
    no_fik: bool = False
    fik_weight: float = 1.0  # μ in A = μ W3ᵀW3 + I (the paper: 1)
    # [open] h_s*(δ) = W5(z_r + δ) + W6 z_u (the paper) carries the KRD's reconstruction error ĥ_s − h_s into v*.
    # True adds the residual h_s − ĥ_s back, so only W5 δ is written into the weights.
    keep_recon_residual: bool = True
    # what the v* norm clamp and decay act on: "h_s" bounds the shift of h_s the optimiser applies by c‖h_s‖
    # (MEMIT's budget); "z_r" (the old default) bounds ‖δ‖ by c‖z_r‖, and ‖z_r‖ is 0.44-0.94 of ‖h_s‖ on SmolLM2.
    clamp_on: str = "h_s"
    through_shrink: bool = True  # optimise δ with the shift the closed form will write, s A⁻¹ R(δ) (module doc)
    kl_reference: str = "clean"  # "clean": the unedited model's KL distribution; "substituted": with ĥ_s in place

    def __post_init__(self) -> None:
        for name, allowed in (("clamp_on", ("z_r", "h_s")), ("kl_reference", ("clean", "substituted"))):
            if getattr(self, name) not in allowed:
                raise HparamsError(f"dike: {name} must be one of {', '.join(map(repr, allowed))}, got "
                                   f"{getattr(self, name)!r}; fix it with --set {name}={allowed[0]}")

    @property
    def krd_variant(self) -> str:
        flags = [f for f in ("no_ctr", "no_kc") if getattr(self, f)]
        return "+".join(flags) or "full"


@functools.lru_cache(maxsize=None)
def dike_code_digest() -> str:
    """The DiKE code a memoised z_r depends on (its intervention, the KRD, the states); the shared v* code is in
    the memo's key already."""
    return source_digest(sys.modules[__name__], krd_code, states_code)


def model_name(model: Any) -> str:
    return str(getattr(model.config, "name_or_path", "") or "MODEL").rstrip("/").split("/")[-1] or "MODEL"


class DikeEditor(LocateEditor):
    name = "dike"
    Hparams = DikeHparams

    def __init__(self, hparams: Any | None = None, options: RunOptions = RunOptions()):
        super().__init__(hparams, options)
        self._krd: dict[tuple, Any] = {}

    @classmethod
    def from_config(cls, model_key: str, overrides: dict[str, Any] | None = None,
                    options: RunOptions = RunOptions()) -> "DikeEditor":
        """MEMIT's YAML for model_key, then dike's (layers, l_r), then overrides: same keys, C, λ and v* as memit."""
        memit = {k: v for k, v in read_yaml("memit", model_key).items() if k != "layers"}
        return cls(load_hparams(DikeHparams, "dike", model_key, overrides, base=memit), options)

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

    def check_ready(self, model: Any, adapter: ModelAdapter, layers: list[int]) -> None:
        if len(layers) != 1:
            raise ValueError(f"dike edits one layer (h_s's layer l); got layers={layers}. Use --set layers=[l]")
        if not (self.hparams.no_tke and self.hparams.no_fik):
            self.load_krd(model, layers[0], self.repr_layer(model, adapter))

    def edit(self, model: Any, tok: Any, adapter: ModelAdapter, layers: list[int], requests: Sequence[EditRequest],
             prefixes: list[str], stats: dict[int, torch.Tensor], result: EditResult, timer: Timer) -> None:
        hp = self.hparams
        layer = layers[0]
        l_r = self.repr_layer(model, adapter)
        krd = None if (hp.no_tke and hp.no_fik) else self.load_krd(model, layer, l_r)
        with timer("keys"):
            K = compute_keys(model, tok, adapter, layer, requests, prefixes).T  # (d_in, n)
        C = stats[layer].to(device=K.device, dtype=torch.float64)
        factor = self.stats_factor(stats[layer], K.device)
        W3 = None if hp.no_fik else krd.krd.W3.weight.detach().to(K.device)
        A_inv = None if W3 is None else torch.linalg.inv(fik_matrix(W3, hp.fik_weight))
        share = written_share(K, C, hp.mom2_update_weight, factor)  # (n,) s_i
        residuals, shifts, tvs, bare_shares = [], [], [], []
        # nothing is applied before every residual is known, so one digest of the model serves the whole batch
        digest = model_state_digest(model) if self.vstar_cache is not None else None
        shrink = None
        if hp.through_shrink:
            shrink = A_inv if A_inv is not None else torch.eye(model.config.hidden_size, dtype=torch.float64,
                                                                 device=K.device)
        for i, req in enumerate(requests):
            with timer("vstar"):
                row_share = None
                if hp.through_shrink:
                    # the share the update writes in each row of the v* batch, from that row's own key: the
                    # bare prompt's key can differ a lot from the context average the update is solved for
                    rows = vstar_row_keys(model, tok, adapter, layer, req, prefixes, hp.vstar().kl_prompt)
                    row_share = written_share_at(rows.T.to(K.device), K[:, i], C, hp.mom2_update_weight, factor)
                residual, shift, tv = self.target_residual(model, tok, adapter, layer, l_r,
                                                           None if krd is None else krd.krd, req, prefixes,
                                                           shrink, digest, row_share)
            bare_shares.append(float("nan") if row_share is None else float(row_share[0]))
            residuals.append(residual)
            shifts.append(shift)
            tvs.append(tv)
        R = torch.stack(residuals, dim=1)  # (d, n)

        def layer_delta(i: int, layer: int, R: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
            return dike_delta(R, K, C, hp.mom2_update_weight, W3, factor, hp.fik_weight)

        before, after = spread_update(model, tok, adapter, layers, requests, prefixes, timer,
                                      lambda i: R.to(K.device), layer_delta, keys=K)
        R64 = R.to(K.device, torch.float64)
        kept = (R64 if A_inv is None else A_inv @ R64).norm(dim=0) / R64.norm(dim=0)  # ‖A⁻¹R‖ / ‖R‖ per edit
        diags = [{**d, "fik_keep": float(f), "share": float(s), "share_bare": b, "residual_norm": float(r)}
                 for d, f, s, b, r in zip(edit_diagnostics(tvs, before, after, torch.stack(shifts)), kept, share,
                                          bare_shares, R64.norm(dim=0))]
        result.info.update(vstar_steps=[tv.steps for tv in tvs], repr_layer=l_r,
                           krd=None if krd is None else str(krd.directory),
                           residual_norms=[float(r.norm()) for r in residuals], diagnostics=diags)

    def target_residual(self, model: Any, tok: Any, adapter: ModelAdapter, layer: int, l_r: int, krd: Any,
                        req: EditRequest, prefixes: list[str], shrink: torch.Tensor | None,
                        digest: str | None = None, row_share: torch.Tensor | None = None,
                        ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """(R, the shift of h_s the optimiser applied at the bare prompt at δ*, the optimiser's TargetValue).

        R(δ) = W5 δ (+ ĥ_s − h_s without keep_recon_residual), δ on z_r; no_tke: R(δ) = δ on h_s itself. The
        optimiser applies R(δ) itself (shrink None), or s_j shrink @ R(δ) in row j of the v* batch (shrink = A⁻¹,
        row_share = s_j, the share the closed form writes at that row's key); the clamp measures the bare row's."""
        hp = self.hparams
        h_s, h_r = subject_and_relation_states(model, tok, adapter, layer, l_r, [req.prompt], [req.subject])
        device = next(model.parameters()).device
        h_s, h_r = h_s[0].to(device), h_r[0].to(device)
        M = None if shrink is None else shrink.to(device=device, dtype=torch.float32)
        rows = None if row_share is None else row_share.to(device=device, dtype=torch.float32)[:, None]

        def applied(r: torch.Tensor) -> torch.Tensor:  # (d,), or (rows, d): one shift per v* batch row
            return r if M is None else rows * (r @ M.T)

        def at_bare(r: torch.Tensor) -> torch.Tensor:
            return r if M is None else applied(r)[0]

        if hp.no_tke:  # w/o TKE: δ on the entangled h_s, as MEMIT's
            if M is None:
                tv = target_value(model, tok, adapter, layer, req, prefixes, hp.vstar(), "block_output",
                                  self.vstar_cache, digest)  # exactly MEMIT's v*: shares its memo entries
                return tv.delta.float().cpu(), tv.delta.float().cpu(), tv
            residual, step_map, init, clean_kl = (lambda d: d), at_bare, h_s, False
        else:
            krd = krd.to(device)
            with torch.no_grad():
                z_r, z_u = krd.components(h_s, h_r)
                base = krd.recompose(z_r, z_u) if hp.keep_recon_residual else h_s

            def residual(delta: torch.Tensor) -> torch.Tensor:
                return krd.recompose(z_r + delta, z_u) - base

            if hp.clamp_on == "h_s":  # the step that reaches h_s: shrink @ W5 δ (W5 without its bias)
                init, step_map = h_s, (lambda delta: at_bare(delta @ krd.W5.weight.T))
            else:
                init, step_map = z_r, None
            clean_kl = hp.kl_reference == "clean" and not hp.keep_recon_residual  # else the shift at δ = 0 is 0

        def intervention(delta: torch.Tensor, positions: Sequence[int]):
            # computed at each forward from delta's current value (a captured step replays it)
            return block_output(model, adapter, layer, positions, add=lambda: applied(residual(delta)))

        def optimise() -> Any:
            return optimise_target_value(model, tok, adapter, layer, req, prefixes, hp.vstar(),
                                         intervention=intervention, init=init, step_map=step_map,
                                         clean_kl_reference=clean_kl)
        # the memo's key must name everything the intervention reads
        variant = None if self.vstar_cache is None else {
            "krd": None if hp.no_tke else weights_digest(krd), "repr_layer": l_r, "clamp_on": hp.clamp_on,
            "code": dike_code_digest(),
            "keep_recon_residual": hp.keep_recon_residual, "no_tke": hp.no_tke, "kl_reference": hp.kl_reference,
            "shrink": None if M is None else hashlib.sha256(M.double().cpu().numpy().tobytes()).hexdigest(),
            "row_share": None if rows is None else rows[:, 0].tolist()}
        tv = target_value(model, tok, adapter, layer, req, prefixes, hp.vstar(), "dike:z_r", self.vstar_cache,
                          digest, optimise=optimise, variant=variant)
        with torch.no_grad():
            r = residual(tv.delta.to(device))
            return r.float().cpu(), at_bare(r).float().cpu(), tv
