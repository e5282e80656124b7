"""Hyperparameters: one YAML per editor per model family, overridable with `--set key=value`.

YAML files live in editors/hparams/<editor>/<family-key>.yaml; each says where its values come from.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
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
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError as exc:
            where = f" ({exc.problem})" if getattr(exc, "problem", None) else ""
            raise HparamsError(f"--set {pair}: the value is not valid YAML{where}; e.g. --set layers=[4,5]") from None
    return out


def _fits(value: Any, hint: Any) -> bool:
    """Whether value matches a dataclass field's type (int, float, bool, str, X | None, list[X], tuple, dict)."""
    if hint is Any:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and all(_fits(v, args[0] if args else Any) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True


def _numbers(value: Any) -> list[float]:
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _numbers(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def check_values(cls: type, editor: str, values: dict[str, Any]) -> None:
    """Every hparam has its field's type and is a finite number >= 0 where numeric (counts, rates, weights,
    layers): a bad --set ends in one line naming it."""
    hints = typing.get_type_hints(cls)
    for k, v in values.items():
        if not _fits(v, hints.get(k, Any)):
            kind = hints[k].__name__ if isinstance(hints[k], type) else str(hints[k])
            raise HparamsError(f"{editor}: {k}={v!r} must be {kind}; fix it with --set {k}=...")
        if any(not math.isfinite(x) or x < 0 for x in _numbers(v)):
            raise HparamsError(f"{editor}: {k}={v!r} must be a finite number >= 0; fix it with --set {k}=...")


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
    check_values(cls, editor, values)
    return cls(**values)


def hparams_hash(hp: Any) -> str:
    blob = json.dumps(dataclasses.asdict(hp), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
