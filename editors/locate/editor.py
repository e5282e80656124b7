"""What ROME, MEMIT and AlphaEdit (and their -C variants) share: hparams, statistics, prefixes, timing.

An editor subclass sets `name`, `Hparams` and implements `edit(model, tok, adapter, requests, result)`.
Statistics and prefixes are cached on the instance (and on disk), never in module globals.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

import torch

from editors.adapters import ModelAdapter, adapter_for
from editors.base import EditRequest, EditResult, HparamsEditor, RunOptions
from editors.hparams import HparamsError
from editors.locate.fingerprint import model_fingerprint
from editors.locate.keys import block_outputs_at_subject, preserved_keys
from editors.locate.prefixes import prefix_groups
from editors.locate.solve import psd_factor
from editors.locate.stats import layer_second_moments
from editors.locate.vstar import VStarConfig

log = logging.getLogger(__name__)


@dataclass
class LocateHparams:
    """Defaults follow ROME's GPT2-XL configuration; YAMLs override per model."""

    layers: list[int] | None = None  # None: the adapter's default for the model's depth
    v_num_grad_steps: int = 20
    v_lr: float = 0.5
    v_weight_decay: float = 0.5
    kl_factor: float = 0.0625
    clamp_norm_factor: float = 4.0
    v_loss_threshold: float = 0.05  # early stop (the seed notes' 0.05)
    context_prefixes: list[list[int]] = field(default_factory=lambda: [[5, 10], [10, 10]])  # [[length, count]]
    prefix_seed: int = 0
    mom2_update_weight: float = 15000.0  # λ in λC (MEMIT; ROME-C)
    stats_corpus: str = "bundled"  # identity | bundled | wikitext | path to a text file
    stats_n_samples: int = 2000
    stats_max_len: int = 128
    stats_dtype: str = "float32"
    # -C variants: each preserved key k_p enters the solve as w k_p k_pᵀ next to λC (an edit key weighs 1 in MEMIT's
    # least squares; ROME writes its edit key exactly). Per-model defaults in the -C YAMLs, chosen in README.md.
    preserve_weight: float = 1.0
    quiet: bool = False  # no progress bars; a run's RunOptions.quiet does the same outside the hparams hash

    def vstar(self) -> VStarConfig:
        return VStarConfig(steps=self.v_num_grad_steps, lr=self.v_lr, weight_decay=self.v_weight_decay,
                           kl_factor=self.kl_factor, clamp_norm_factor=self.clamp_norm_factor,
                           loss_threshold=self.v_loss_threshold)


def written_diagnostics(before: torch.Tensor, after: torch.Tensor, shifts: torch.Tensor) -> list[dict[str, float]]:
    """How much of each v* shift the weight update actually wrote, one dict per edit (rows of (n, d) tensors).

    before / after: h_s (the residual stream after the layer v* was optimised at, at the bare prompt's last subject
    token) measured by forward passes of the model before and after the update; shifts: the change t of h_s that the
    v* optimisation applied when it reached its final NLL. With Δh = after − before:
      written_frac = ⟨Δh, t⟩ / ‖t‖²  (1: the edited model sits where v* predicted o*; MEMIT-style solves write less);
      written_norm = ‖Δh‖ / ‖t‖      (the same, counting any part of Δh off t's direction).
    """
    out = []
    for b, a, t in zip(before.double().cpu(), after.double().cpu(), shifts.double().cpu()):
        dh, tt = a - b, float(t @ t)
        out.append({"written_frac": float(dh @ t) / tt if tt > 0 else float("nan"),
                    "written_norm": float(dh.norm()) / tt ** 0.5 if tt > 0 else float("nan")})
    return out


def vstar_diagnostics(tv: Any) -> dict[str, Any]:
    """The v* optimisation's end state: its NLL of o* before and after, and whether the norm clamp held it."""
    return {"vstar_nll_init": tv.nll_init, "vstar_nll": tv.nll, "vstar_at_limit": tv.at_limit,
            "vstar_steps": tv.steps}


def subject_states(model: Any, tok: Any, adapter: ModelAdapter, layer: int,
                   requests: Sequence[EditRequest]) -> torch.Tensor:
    """(n, d) h_s after block `layer` at each request's bare prompt (the diagnostics' measuring point)."""
    return block_outputs_at_subject(model, tok, adapter, layer, [(r.prompt, r.subject) for r in requests])


class Timer:
    """Accumulates wall seconds per phase into a timings dict."""

    def __init__(self, timings: dict[str, float]):
        self.timings = timings
        for k in ("keys", "vstar", "stats", "solve"):
            timings.setdefault(k, 0.0)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - t0


class LocateEditor(HparamsEditor):
    Hparams: ClassVar[type] = LocateHparams
    uses_preserved: ClassVar[bool] = False  # the -C variants add EditRequest.preserve as constraints

    def __init__(self, hparams: Any | None = None, options: RunOptions = RunOptions()):
        super().__init__(hparams, options)
        self.quiet = options.quiet
        self.vstar_cache: Path | None = options.vstar_cache  # folder of the v* memo (editors.locate.vstar_cache)
        self._stats: dict[tuple, torch.Tensor] = {}  # (fingerprint, layer) -> C, this instance's memo
        self._factors: dict[tuple, tuple[torch.Tensor, torch.Tensor | None]] = {}  # (id(C), device) -> (C, L)

    # --- pieces the subclasses compose -------------------------------------------------------------
    def default_layers(self, n_layers: int, adapter: ModelAdapter) -> list[int]:
        return [adapter.default_edit_layer(n_layers)]

    def edit_layers(self, model: Any, adapter: ModelAdapter) -> list[int]:
        n = adapter.n_layers(model)
        layers = list(self.hparams.layers) if self.hparams.layers else self.default_layers(n, adapter)
        bad = [l for l in layers if not 0 <= l < n]
        if bad:
            raise HparamsError(f"{self.name}: layers {bad} out of range for a {n}-layer model; "
                             f"use --set layers=[...] with values in 0..{n - 1}")
        return layers

    def second_moments(self, model: Any, tok: Any, adapter: ModelAdapter, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        hp = self.hparams
        fp = (model_fingerprint(model), hp.stats_corpus, hp.stats_n_samples, hp.stats_max_len, hp.stats_dtype)
        missing = [l for l in layers if (fp, l) not in self._stats]
        if missing:
            found = layer_second_moments(model, tok, adapter, missing, hp.stats_corpus, hp.stats_n_samples,
                                         hp.stats_max_len, hp.stats_dtype,
                                         quiet=hp.quiet or self.quiet)
            self._stats.update({(fp, l): C for l, C in found.items()})
        return {l: self._stats[(fp, l)] for l in layers}

    def stats_factor(self, C: torch.Tensor, device: Any) -> torch.Tensor | None:
        """psd_factor(C) on `device`, once per statistics matrix: MEMIT-style solves then need no d_in³ step."""
        key = (id(C), str(device))
        hit = self._factors.get(key)
        if hit is None or hit[0] is not C:
            hit = (C, psd_factor(C.to(device)))
            self._factors[key] = hit
        return hit[1]

    def prefixes(self, model: Any, tok: Any) -> list[str]:
        return prefix_groups(model, tok, self.hparams.context_prefixes, self.hparams.prefix_seed)

    def keep_keys(self, model: Any, tok: Any, adapter: ModelAdapter, layer: int, requests: Sequence[EditRequest],
                  prefixes: Sequence[str]) -> torch.Tensor | None:
        """(d_in, m) keys of the preserved facts (-C variants only), scaled by sqrt(preserve_weight)."""
        if not self.uses_preserved or not any(r.preserve for r in requests):
            return None
        # EditRequest.preserve comes from the harness's held-out constraint pool (krd_train / constraint_facts),
        # never from the fine-grained facts the evaluation scores.
        K = preserved_keys(model, tok, adapter, layer, requests, prefixes).T
        return K * self.hparams.preserve_weight ** 0.5

    def check_ready(self, model: Any, adapter: ModelAdapter, layers: list[int]) -> None:
        """Refuse what edit() would refuse, before the second moments (minutes on a first run) are computed."""

    def new_result(self, model: Any, adapter: ModelAdapter, layers: Sequence[int]) -> EditResult:
        return EditResult.snapshot(model, [adapter.ffn_out_weight_name(l) for l in layers])

    # --- the Editor protocol -----------------------------------------------------------------------
    def apply(self, model: Any, tok: Any, requests: Sequence[EditRequest]) -> EditResult:
        if not requests:
            return EditResult()
        t0 = time.perf_counter()
        adapter = adapter_for(model)
        layers = self.edit_layers(model, adapter)
        self.check_ready(model, adapter, layers)
        result = self.new_result(model, adapter, layers)
        timer = Timer(result.timings)
        with timer("stats"):
            stats = self.second_moments(model, tok, adapter, layers)
        with timer("keys"):
            prefixes = self.prefixes(model, tok)
        self.edit(model, tok, adapter, layers, requests, prefixes, stats, result, timer)
        result.timings["total"] = time.perf_counter() - t0
        result.info.update(editor=self.name, layers=layers, n_requests=len(requests))
        return result

    def edit(self, model: Any, tok: Any, adapter: ModelAdapter, layers: list[int], requests: Sequence[EditRequest],
             prefixes: list[str], stats: dict[int, torch.Tensor], result: EditResult, timer: Timer) -> None:
        raise NotImplementedError
