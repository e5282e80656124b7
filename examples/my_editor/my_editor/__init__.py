"""A minimal third-party editor: gradient steps on one FFN output matrix, restricted to a few rows.

It shows the whole contract: a name, an hparams dataclass, from_config, and apply() returning an
EditResult that restores exactly what it touched.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch

from editors.adapters import adapter_for
from editors.base import EditRequest, EditResult, RunOptions
from editors.hparams import load_hparams
from editors.text import encode_pair


@dataclass
class NudgeHparams:
    layer: int | None = None  # None: the adapter's default edit layer for this depth
    steps: int = 20
    lr: float = 1e-2


class LastLayerNudge:
    name: ClassVar[str] = "my_editor"

    def __init__(self, hparams: NudgeHparams):
        self.hparams = hparams

    @classmethod
    def from_config(cls, model_key: str, overrides: dict, options: RunOptions) -> "LastLayerNudge":
        # options (progress bars, v* memo) do not concern this editor
        return cls(load_hparams(NudgeHparams, cls.name, model_key, overrides))

    def apply(self, model, tok, requests: Sequence[EditRequest]) -> EditResult:
        adapter = adapter_for(model)
        layer = self.hparams.layer if self.hparams.layer is not None else adapter.default_edit_layer(adapter.n_layers(model))
        weight_name = adapter.ffn_out_weight_name(layer)
        result = EditResult.snapshot(model, [weight_name])
        weight = adapter.ffn_out_weight(model, layer)
        weight.requires_grad_(True)
        opt = torch.optim.Adam([weight], lr=self.hparams.lr)
        device = weight.device
        for _ in range(self.hparams.steps):
            opt.zero_grad()
            loss = 0.0
            for req in requests:
                prompt_ids, target_ids = encode_pair(tok, req.prompt, req.target_new)  # the suite's spacing/BOS rule
                ids = torch.tensor([prompt_ids + target_ids], device=device)
                logits = model(ids).logits[0, len(prompt_ids) - 1:-1]
                loss = loss + torch.nn.functional.cross_entropy(logits, torch.tensor(target_ids, device=device))
            loss.backward()
            opt.step()
        weight.requires_grad_(False)
        return result
