"""Editor registry over the `fineked.editors` entry-point group.

Built-in editors register through the same group (pyproject.toml), so a third-party
package with an entry point is a first-class citizen. A name may carry flags in
brackets, e.g. `dike[no_fik]`, passed to the editor as boolean hparam overrides.
"""
from __future__ import annotations

import re
from importlib.metadata import entry_points
from typing import Any

GROUP = "fineked.editors"
_extra: dict[str, Any] = {}  # in-process registrations (tests, notebooks)


class UnknownEditor(ValueError):
    pass


def register(name: str, editor_cls: Any) -> None:
    """Register an editor class in-process (entry points are the normal route)."""
    _extra[name] = editor_cls


def available() -> dict[str, Any]:
    """name -> entry point (or class, for in-process registrations)."""
    found: dict[str, Any] = {ep.name: ep for ep in entry_points(group=GROUP)}
    found.update(_extra)
    return found


def parse_editor_spec(spec: str) -> tuple[str, list[str]]:
    """`dike[no_fik,no_tke]` -> ("dike", ["no_fik", "no_tke"])."""
    m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(?:\[([A-Za-z0-9_,\s]*)\])?\s*", spec)
    if not m:
        raise UnknownEditor(f"cannot parse editor {spec!r}; use NAME or NAME[flag,flag], e.g. dike[no_fik]")
    flags = [f.strip() for f in (m.group(2) or "").split(",") if f.strip()]
    return m.group(1), flags


def editor_class(name: str) -> Any:
    found = available()
    if name not in found:
        raise UnknownEditor(f"unknown editor {name!r}; available: {', '.join(sorted(found))}")
    obj = found[name]
    return obj.load() if hasattr(obj, "load") else obj


def make_editor(spec: str, model_key: str, overrides: dict[str, Any] | None = None) -> Any:
    """Build an editor from a spec (`memit`, `dike[no_fik]`) with the YAML hparams for model_key, plus overrides.

    model_key is an hparams file stem (`smollm2-135m`, `gpt2-xl`) or a family (`llama`); with no YAML the
    dataclass defaults apply (layers=None means "the adapter's default for this depth").
    """
    name, flags = parse_editor_spec(spec)
    cls = editor_class(name)
    merged = {flag: True for flag in flags}
    merged.update(overrides or {})
    editor = cls.from_config(model_key, merged)
    if flags:
        editor.display_name = f"{name}[{','.join(flags)}]"
    return editor


def display_name(editor: Any) -> str:
    return getattr(editor, "display_name", None) or editor.name
