"""FT-L: fine-tune one layer's FFN output (down) projection on the edit prompt, with an L-inf bound on the change.

The constrained fine-tuning baseline of the ROME paper (Meng et al. 2022, "FT+L"), as in EasyEdit's FT
with objective "prompt_last": Adam on the NLL of o* after the prompt; after each step the weights are
clamped to W0 +/- norm_constraint; optimisation stops once the loss is below min_loss.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from editors.adapters import adapter_for
from editors.base import EditRequest, EditResult, HparamsEditor
from editors.hparams import HparamsError
from editors.text import target_tokens

log = logging.getLogger(__name__)


@dataclass
class FTHparams:
    layers: list[int] | None = None  # None: the adapter's default edit layer for this depth
    lr: float = 5e-4
    steps: int = 25
    norm_constraint: float | None = 5e-4  # L-inf bound on each weight's change; None = unconstrained
    weight_decay: float = 0.0
    min_loss: float = 1e-2  # ROME's FT stops stepping once the loss is below this


def target_batch(tok: Any, requests: Sequence[EditRequest]) -> dict[str, torch.Tensor]:
    """Right-padded prompt+target inputs with labels that are -100 everywhere but the o* tokens."""
    b = target_tokens(tok, [r.prompt for r in requests], [r.target_new for r in requests], "right",
                      last_target_input=False)
    return {"input_ids": b.input_ids, "attention_mask": b.attention_mask, "labels": b.labels}


def mean_target_nll(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over requests of each request's mean token NLL of o*."""
    dev = next(model.parameters()).device
    logits = model(input_ids=batch["input_ids"].to(dev), attention_mask=batch["attention_mask"].to(dev)).logits
    labels = batch["labels"].to(dev)
    nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100,
                                            reduction="none")
    per_request = nll.sum(1) / (labels != -100).sum(1)
    return per_request.mean()


class FTEditor(HparamsEditor):
    name = "ft"
    Hparams = FTHparams

    def layers(self, model: Any) -> list[int]:
        adapter = adapter_for(model)
        n = adapter.n_layers(model)
        layers = list(self.hparams.layers) if self.hparams.layers is not None else [adapter.default_edit_layer(n)]
        if any(not 0 <= l < n for l in layers):
            raise HparamsError(f"ft: layers {layers} out of range for a {n}-layer model; "
                               f"use --set layers=[...] with values in 0..{n - 1}")
        return layers

    def apply(self, model: Any, tok: Any, requests: Sequence[EditRequest]) -> EditResult:
        hp, adapter = self.hparams, adapter_for(model)
        t0 = time.perf_counter()
        names = [adapter.ffn_out_weight_name(layer) for layer in self.layers(model)]
        result = EditResult.snapshot(model, names)
        params = dict(model.named_parameters())
        weights = [params[n] for n in names]
        batch = target_batch(tok, requests)
        opt = torch.optim.Adam(weights, lr=hp.lr, weight_decay=hp.weight_decay)
        losses: list[float] = []
        was_training = model.training
        model.eval()  # no dropout: the edit must be deterministic
        for w in weights:
            w.requires_grad_(True)
        try:
            for _ in range(hp.steps):
                loss = mean_target_nll(model, batch)
                losses.append(loss.item())
                if losses[-1] < hp.min_loss:
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if hp.norm_constraint is not None:
                    with torch.no_grad():
                        for w, n in zip(weights, names):
                            w0 = result.originals[n]
                            w.copy_(torch.clamp(w, w0 - hp.norm_constraint, w0 + hp.norm_constraint))
        finally:
            for w in weights:
                w.requires_grad_(False)
                w.grad = None
            model.train(was_training)
        result.timings["edit_s"] = time.perf_counter() - t0
        result.info.update(layers=self.layers(model), steps=len(losses), loss_first=losses[0], loss_last=losses[-1])
        log.debug("ft: %d steps, loss %.3f -> %.3f", len(losses), losses[0], losses[-1])
        return result
