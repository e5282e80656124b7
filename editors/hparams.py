"""Hyperparameters: one YAML per editor per model family, overridable with `--set key=value`.

YAML files live in editors/hparams/<editor>/<family-key>.yaml; each says where its values come from.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml

HPARAMS_DIR = Path(__file__).parent / "hparams"
T = TypeVar("T")

# config.model_type / model key -> YAML file stem
FAMILY_FILES = {"gpt2": "gpt2-xl", "gptj": "gpt-j-6b", "llama": "llama3-8b"}


class HparamsError(ValueError):
    pass


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """["lr=0.5", "layers=[4,5]"] -> {"lr": 0.5, "layers": [4, 5]} (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise HparamsError(f"--set expects key=value, got {pair!r}")
        k, v = pair.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def yaml_path(editor: str, model_key: str) -> Path:
    """The YAML for (editor, model_key); model_key is a file stem (smollm2-135m) or a family (llama)."""
    stem = FAMILY_FILES.get(model_key, model_key)
    return HPARAMS_DIR / editor / f"{stem}.yaml"


def read_yaml(editor: str, model_key: str) -> dict[str, Any]:
    """The YAML values for (editor, model_key), or {} when there is no file."""
    path = yaml_path(editor, model_key)
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def load_hparams(cls: type[T], editor: str, model_key: str, overrides: dict[str, Any] | None = None,
                 base: dict[str, Any] | None = None) -> T:
    """Dataclass defaults <- base (values inherited from another editor) <- YAML for (editor, model_key)
    <- overrides. Unknown keys fail loudly."""
    values: dict[str, Any] = dict(base or {})
    values.update(read_yaml(editor, model_key))
    values.update(overrides or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise HparamsError(f"{editor}: unknown hparam(s) {unknown}; known: {sorted(names)}")
    return cls(**values)


def hparams_hash(hp: Any) -> str:
    blob = json.dumps(dataclasses.asdict(hp), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
