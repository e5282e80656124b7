"""An on-disk memo of target-value optimisations, for editors that solve the same v* problem.

MEMIT, MEMIT-C and AlphaEdit optimise the same z (same layer, site and settings), and ROME and ROME-C the same
v*, so a leaderboard that runs them all on the same cases repeats every optimisation. Upstream MEMIT caches z by
case id inside one run's folder; here the key is everything the optimisation reads, so an entry can only be reused
where a fresh optimisation would return the same numbers:
  - a digest of every parameter and buffer of the model as it is now (a sequentially edited model never matches
    its base model's entries),
  - the layer, the site, the VStarConfig and whether the prefix KV cache is used,
  - the request's prompt, subject and new object, and the context prefixes,
  - the tokenizer, the device type and the torch / transformers versions (their numerics differ slightly).
DiKE's optimisation on z_r is memoised the same way with the KRD's digest in the key, so dike and dike[no_fik]
(same KRD, same v*, another solve) share it. Hashing the weights costs about 0.6 s for SmolLM2-135M on one CPU
core (under a tenth of one optimisation), so the memo is opt-in: `fineked run --vstar-cache DIR`.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from editors.adapters import ModelAdapter
from editors.base import EditRequest, tensor_digest
from editors.locate.vstar import TargetValue, VStarConfig, optimise_target_value


def weights_digest(model: torch.nn.Module) -> str:
    """Hash of the names and exact bytes of every (deduplicated) parameter and buffer."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    lines = (f"{name}:{t.dtype}:{tuple(t.shape)}:{tensor_digest(t)}" for name, t in tensors)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def vstar_key(digest: str, tok: Any, layer: int, site: str, cfg: VStarConfig, device: Any, request: EditRequest,
              prefixes: Sequence[str], variant: Any = None) -> str:
    import transformers

    payload = {"weights": digest, "tokenizer": [getattr(tok, "name_or_path", ""), len(tok)], "layer": layer,
               "site": site, "config": asdict(cfg), "prefix_cache": cfg.uses_prefix_cache(device),
               "device": torch.device(device).type, "request": [request.prompt, request.subject, request.target_new],
               "prefixes": list(prefixes), "versions": [torch.__version__, transformers.__version__],
               "variant": variant}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _save(path: Path, tv: TargetValue) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save({"delta": tv.delta.cpu(), "init": tv.init.cpu(), "steps": tv.steps,
                "backward_passes": tv.backward_passes, "loss": tv.loss, "nll": tv.nll, "nll_init": tv.nll_init}, tmp)
    tmp.replace(path)  # atomic: two runs sharing the folder never read half a file


def _load(path: Path, device: Any) -> TargetValue | None:
    try:
        d = torch.load(path, map_location=device, weights_only=True)
    except (OSError, RuntimeError, EOFError):
        return None  # unreadable entry: optimise again (and overwrite it)
    return TargetValue(delta=d["delta"], init=d["init"], steps=d["steps"], backward_passes=d["backward_passes"],
                       loss=d["loss"], nll=d["nll"], nll_init=d["nll_init"])


def target_value(model: Any, tok: Any, adapter: ModelAdapter, layer: int, request: EditRequest,
                 prefixes: Sequence[str], cfg: VStarConfig, site: str, cache: Path | None,
                 digest: str | None = None, optimise: Callable[[], TargetValue] | None = None,
                 variant: Any = None) -> TargetValue:
    """optimise_target_value at `site`, through the memo in `cache` (None: no memo). `digest` is
    weights_digest(model) when the caller already has it (MEMIT: one per batch). `optimise()` replaces the default
    optimisation (DiKE's intervention on z_r); `variant`, JSON-able, then names all it reads beyond the key's
    fields (DiKE: the KRD's digest and settings), and `site` names the intervention."""
    def fresh() -> TargetValue:
        return optimise() if optimise else optimise_target_value(model, tok, adapter, layer, request, prefixes,
                                                                 cfg, site=site)
    if cache is None:
        return fresh()
    device = next(model.parameters()).device
    key = vstar_key(digest or weights_digest(model), tok, layer, site, cfg, device, request, prefixes, variant)
    path = Path(cache) / key[:2] / f"{key}.pt"
    hit = _load(path, device) if path.exists() else None
    if hit is not None:
        return hit
    tv = fresh()
    _save(path, tv)
    return tv
