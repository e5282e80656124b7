"""KRD checkpoints: weights in safetensors plus a JSON config (model id, layers, losses, data, metrics, curves).

Layout under editors.models.cache_dir()/krd/<model key>/l<l>-r<l_r>-<variant>/:
  krd.safetensors   the best weights (by validation loss)
  krd.json          the config and the record of training
  resume.safetensors  optimiser state and the latest weights, for resuming an interrupted run (safetensors +
                    JSON through common.cache: reading it never runs code)
  tsne.png          diagnostics (see diagnostics.py)
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.cache import (atomic_write_bytes, atomic_write_text, cache_dir, read_tensor_entry,
                          write_tensor_entry)
from editors.dike.krd import KRD, KRDConfig

log = logging.getLogger(__name__)

WEIGHTS, CONFIG, RESUME = "krd.safetensors", "krd.json", "resume.safetensors"


class KRDCheckpointError(ValueError):
    """A missing or mismatched KRD checkpoint; the message names the fix."""


def checkpoint_dir(model_key: str, layer: int, repr_layer: int, variant: str = "full") -> Path:
    return cache_dir() / "krd" / model_key / f"l{layer}-r{repr_layer}-{variant}"


def save_krd(directory: Path, krd: KRD, meta: dict[str, Any]) -> Path:
    """Write krd.safetensors and krd.json (meta must hold model_fingerprint, layer, repr_layer)."""
    from safetensors.torch import save

    state = {k: v.detach().contiguous().cpu() for k, v in krd.state_dict().items()}
    atomic_write_bytes(directory / WEIGHTS, save(state))
    atomic_write_text(directory / CONFIG, json.dumps({**meta, "krd": krd.config_dict()}, indent=1, default=str))
    return directory


@dataclass
class LoadedKRD:
    krd: KRD
    meta: dict[str, Any]
    directory: Path


def read_meta(directory: Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG
    if not path.exists():
        raise KRDCheckpointError(f"no KRD checkpoint at {directory}")
    return json.loads(path.read_text())


def load_krd(directory: Path | str, model_fingerprint: str | None = None, layer: int | None = None,
             repr_layer: int | None = None, model_name: str = "MODEL") -> LoadedKRD:
    """Load a checkpoint; refuse one trained for another model or other layers."""
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / WEIGHTS).exists():
        raise KRDCheckpointError(f"no KRD checkpoint at {directory}; run `fineked train-krd --model {model_name}`")
    meta = read_meta(directory)
    if model_fingerprint is not None and meta.get("model_fingerprint") != model_fingerprint:
        raise KRDCheckpointError(
            f"KRD at {directory} was trained for model {meta.get('model_fingerprint')}, not {model_fingerprint}; "
            f"run `fineked train-krd --model {model_name}`")
    for name, want in (("layer", layer), ("repr_layer", repr_layer)):
        if want is not None and meta.get(name) != want:
            raise KRDCheckpointError(
                f"KRD at {directory} was trained with {name}={meta.get(name)}, not {want}; "
                f"run `fineked train-krd --model {model_name} --layer ... --repr-layer ...` for these layers")
    krd = KRD(KRDConfig(**meta["krd"]))
    krd.load_state_dict(load_file(str(directory / WEIGHTS)))
    krd.eval().requires_grad_(False)
    return LoadedKRD(krd, meta, directory)


def save_resume_state(directory: Path, state: dict[str, Any], meta: dict[str, Any]) -> None:
    write_tensor_entry(Path(directory) / RESUME, {"state": state, "meta": _plain(meta)})


def _plain(meta: dict[str, Any]) -> dict[str, Any]:
    """meta as it reads back from JSON (tuples as lists), so a saved state compares equal to a fresh one."""
    return json.loads(json.dumps(meta, default=str))


def load_resume_state(directory: Path, meta: dict[str, Any]) -> dict[str, Any] | None:
    """The saved training state if it belongs to the same model, layers, losses and data; else None."""
    path = Path(directory) / RESUME
    saved = read_tensor_entry(path, lambda v: None if isinstance(v, dict) and {"state", "meta"} <= set(v)
                              else "not a KRD training state")
    if saved is None:  # none, or unreadable (warned): train from the start
        return None
    keys = ("model_fingerprint", "layer", "repr_layer", "data_fingerprint", "train_config")
    meta = _plain(meta)
    if any(saved["meta"].get(k) != meta.get(k) for k in keys):
        log.warning("ignoring %s: it was made for another model, data or configuration", path)
        return None
    return saved["state"]
