"""A cheap identity for a model's weights, used to key on-disk caches (statistics, prefixes).

It hashes the config and samples of parameters editors never touch (embeddings, norms), so an edited
model keeps the identity of its base model and its cached statistics stay valid. The same weights in another dtype
or on another device kind compute other statistics, so those get a suffix (editors.placement.placement_tag).
"""
from __future__ import annotations

import hashlib

import torch

from editors.adapters import adapter_for
from editors.placement import placement_tag


def model_fingerprint(model: torch.nn.Module) -> str:
    cached = getattr(model, "_fineked_fingerprint", None)
    if cached:
        return cached + placement_tag(model)  # the tag is not memoised: the model may move
    adapter = adapter_for(model)
    h = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    for path in (adapter.embed, adapter.final_norm):
        for p in model.get_submodule(path).parameters():
            flat = p.detach().reshape(-1)
            sample = torch.cat([flat[:4096], flat[-4096:]]).float().cpu().contiguous()
            h.update(sample.numpy().tobytes())
    name = str(getattr(model.config, "name_or_path", "") or "model").rstrip("/").split("/")[-1] or "model"
    fp = f"{name}-{h.hexdigest()[:12]}"
    try:
        model._fineked_fingerprint = fp  # memo on the instance
    except AttributeError:
        pass
    return fp + placement_tag(model)
