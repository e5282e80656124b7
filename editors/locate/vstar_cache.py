"""An on-disk memo of target-value optimisations, for editors that solve the same v* problem.

MEMIT, MEMIT-C and AlphaEdit optimise the same z (same layer, site and settings), and ROME and ROME-C the same
v*, so a leaderboard that runs them all on the same cases repeats every optimisation. Upstream MEMIT caches z by
case id inside one run's folder; here the key is everything the optimisation reads, so an entry can only be reused
where a fresh optimisation would return the same numbers:
  - a digest of every parameter and buffer of the model as it is now (a sequentially edited model never matches
    its base model's entries) and of its config,
  - the layer, the site, the VStarConfig and whether the prefix KV cache is used,
  - the request's prompt, subject and new object, and the context prefixes,
  - the tokenizer, the device (GPU name, TF32 flags, CPU threads) and the torch / transformers versions,
  - the source of the code that computes it (so a changed loss never reads old entries).
DiKE's optimisation on z_r is memoised the same way with the KRD's digest in the key, so dike and dike[no_fik]
(same KRD, same v*, another solve) share it. Hashing the weights costs about 0.6 s for SmolLM2-135M on one CPU
core (under a tenth of one optimisation), so the memo is opt-in: `fineked run --vstar-cache DIR`.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

import torch

from common.cache import finite_tensors, read_tensor_entry, write_tensor_entry
from editors.adapters import ModelAdapter
from editors.base import EditRequest, weights_digest
from editors.locate import hooks, tokens, vstar
from editors.locate.vstar import TargetValue, VStarConfig, optimise_target_value

log = logging.getLogger(__name__)

# Modules whose code decides every v*: editing any of them invalidates every entry. An editor whose own code also
# decides its v* (DiKE's intervention) puts source_digest(its modules) in the `variant` it passes.
CODE_MODULES = (vstar, hooks, tokens)


def source_digest(*modules: ModuleType) -> str:
    h = hashlib.sha256()
    for module in modules:
        h.update(inspect.getsource(module).encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def code_digest() -> str:
    return source_digest(*CODE_MODULES)


def model_state_digest(model: torch.nn.Module) -> str:
    """The weights and the config (attention implementation, eps, rope) of the model as it is now."""
    config = model.config.to_json_string(use_diff=False) if hasattr(model, "config") else ""
    return hashlib.sha256(f"{weights_digest(model)}\n{config}".encode()).hexdigest()


def device_fields(device: Any) -> dict[str, Any]:
    device = torch.device(device)
    fields: dict[str, Any] = {"type": device.type, "matmul_precision": torch.get_float32_matmul_precision()}
    if device.type == "cuda":
        fields.update(name=torch.cuda.get_device_name(device), tf32=torch.backends.cuda.matmul.allow_tf32,
                      cudnn_tf32=torch.backends.cudnn.allow_tf32)
    else:
        fields["threads"] = torch.get_num_threads()  # the reduction order, hence the last bits, depends on it
    return fields


def vstar_key(digest: str, tok: Any, layer: int, site: str, cfg: VStarConfig, device: Any, request: EditRequest,
              prefixes: Sequence[str], variant: Any = None) -> str:
    import transformers

    payload = {"model": digest, "tokenizer": [getattr(tok, "name_or_path", ""), len(tok)], "layer": layer,
               "site": site, "config": asdict(cfg), "prefix_cache": cfg.uses_prefix_cache(device),
               "device": device_fields(device), "request": [request.prompt, request.subject, request.target_new],
               "prefixes": list(prefixes), "versions": [torch.__version__, transformers.__version__],
               "code": code_digest(), "variant": variant}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _save(path: Path, tv: TargetValue) -> None:
    try:
        # clone: on CPU `init` is a view into the whole site activation, which would be written out whole
        write_tensor_entry(path, {"delta": tv.delta.detach().cpu().clone(), "init": tv.init.detach().cpu().clone(),
                                  "steps": tv.steps, "backward_passes": tv.backward_passes, "loss": tv.loss,
                                  "nll": tv.nll, "nll_init": tv.nll_init, "step_norm": tv.step_norm,
                                  "limit": tv.limit})
    except OSError as e:  # a full disk must not stop the run: the edit already has its v*
        log.warning("v* memo: could not write %s (%s)", path, e)


def _load(path: Path, device: Any, width: int | None) -> TargetValue | None:
    """The memoised v*, None if absent or unreadable of any kind (common.cache warns): optimise again.
    width: the vectors' length where it is known (the model's hidden size), else only their agreement is checked."""
    def check(d: Any) -> str | None:
        shapes = {tuple(d[k].shape) if isinstance(d.get(k), torch.Tensor) else None for k in ("delta", "init")}
        if len(shapes) != 1 or None in shapes or len(next(iter(shapes))) != 1 or (
                width is not None and shapes != {(width,)}):
            return f"delta and init must be vectors of one width{f' ({width})' if width else ''}"
        return finite_tensors(d)
    d = read_tensor_entry(path, check, device=device)
    if d is None:
        return None
    return TargetValue(delta=d["delta"], init=d["init"], steps=d["steps"], backward_passes=d["backward_passes"],
                       loss=d["loss"], nll=d["nll"], nll_init=d["nll_init"],
                       step_norm=d.get("step_norm", float("nan")), limit=d.get("limit", float("nan")))


def target_value(model: Any, tok: Any, adapter: ModelAdapter, layer: int, request: EditRequest,
                 prefixes: Sequence[str], cfg: VStarConfig, site: str, memo: Path | None,
                 digest: str | None = None, optimise: Callable[[], TargetValue] | None = None,
                 variant: Any = None) -> TargetValue:
    """optimise_target_value at `site`, through the memo folder `memo` (None: no memo). `digest` is
    model_state_digest(model) when the caller already has it (one per batch, before any update). `optimise()`
    replaces the default optimisation (DiKE's intervention on z_r); `variant`, JSON-able, then names all it reads
    beyond the key's fields (DiKE: the KRD's digest and settings), and `site` names the intervention."""
    def fresh() -> TargetValue:
        return optimise() if optimise else optimise_target_value(model, tok, adapter, layer, request, prefixes,
                                                                 cfg, site=site)
    if memo is None:
        return fresh()
    device = next(model.parameters()).device
    key = vstar_key(digest or model_state_digest(model), tok, layer, site, cfg, device, request, prefixes, variant)
    path = Path(memo) / key[:2] / f"{key}.safetensors"
    hit = _load(path, device, None if optimise else model.config.hidden_size)
    if hit is not None:
        return hit
    tv = fresh()
    _save(path, tv)
    return tv
