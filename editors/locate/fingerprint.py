"""Model identities for on-disk caches. There are three, one per question a cache asks:

- model_fingerprint: which base model is this? Keys statistics, prefixes and KRD checkpoints. It hashes the config
  and samples of parameters editors never touch (embeddings, norms), so an edited model keeps the identity of its
  base model and its cached statistics stay valid. Load-time config fields (source folder, library version, dtype)
  are left out, so a KRD or statistics entry made under one FINEKED_CACHE stays valid under another. The same
  weights in another dtype or on another device kind compute other statistics, so those get a suffix
  (editors.placement.placement_tag).
- checkpoint_digest: is this the same checkpoint as last time? Keys the harness's pre-edit predictions: exact hashes
  of two small weights (final norm, last FFN output), so a changed checkpoint under the same name gets its own entry
  without hashing every weight.
- editors.base.weights_digest (with the config: editors.locate.vstar_cache.model_state_digest): are these exactly
  the weights now in memory? Keys the v* memo, where a sequentially edited model must never match its base model.
"""
from __future__ import annotations

import hashlib
import json

import torch

from editors.adapters import UnknownModelFamily, adapter_for
from editors.base import tensor_digest
from editors.placement import placement_tag


# Config fields that say where and how a checkpoint was loaded, not what it is: the folder it came from (which moves
# with FINEKED_CACHE), the library version, the load dtype (placement_tag carries that).
_LOAD_FIELDS = ("transformers_version", "dtype", "torch_dtype")


def architecture_json(config) -> str:
    """The config as canonical JSON, without load-time fields: the same checkpoint loaded from another folder, by
    another transformers release or in another dtype gives the same text."""
    def strip(d: dict) -> dict:
        return {k: strip(v) if isinstance(v, dict) else v for k, v in d.items()
                if not str(k).startswith("_") and k not in _LOAD_FIELDS}
    return json.dumps(strip(config.to_dict()), sort_keys=True, default=str)


def model_fingerprint(model: torch.nn.Module) -> str:
    cached = getattr(model, "_fineked_fingerprint", None)
    if cached:
        return cached + placement_tag(model)  # the tag is not memoised: the model may move
    adapter = adapter_for(model)
    h = hashlib.sha256(architecture_json(model.config).encode())
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


def checkpoint_digest(model: torch.nn.Module) -> str:
    """Exact hashes of the final norm and the last FFN output weight ("unknown-family" where no adapter fits)."""
    try:
        ad = adapter_for(model)
    except UnknownModelFamily:
        return "unknown-family"
    norm = model.get_submodule(ad.final_norm).weight
    return tensor_digest(norm) + tensor_digest(ad.ffn_out_weight(model, ad.n_layers(model) - 1))
