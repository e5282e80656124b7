"""Editor registry over the `fineked.editors` entry-point group.

Built-in editors register through the same group (pyproject.toml), so a third-party
package with an entry point is a first-class citizen. A name may carry flags in
brackets, e.g. `dike[no_fik]`, passed to the editor as boolean hparam overrides.
"""
from __future__ import annotations

import inspect
import re
from importlib.metadata import entry_points
from typing import Any

from editors.base import Editor, RunOptions

GROUP = "fineked.editors"
_extra: dict[str, Any] = {}  # in-process registrations (tests, notebooks)


class UnknownEditor(ValueError):
    pass


class BadEditor(ValueError):
    """A registered editor that does not implement editors.base.Editor (what a plugin author sees first)."""


CONTRACT = ("an editor defines name, hparams, from_config(model_key, overrides, options) and "
            "apply(model, tok, requests) (editors.base.Editor)")


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


def check_editor_class(name: str, cls: Any) -> None:
    """One-line BadEditor naming the first missing member of the Editor protocol (and of StatefulEditor, whose
    two methods go together)."""
    where = f"editor {name!r} ({getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', cls)})"
    if not isinstance(getattr(cls, "name", None), str):
        raise BadEditor(f"{where} has no `name` string; {CONTRACT}")
    for member in ("from_config", "apply"):
        if not callable(getattr(cls, member, None)):
            raise BadEditor(f"{where} has no `{member}`; {CONTRACT}")
    try:
        inspect.signature(cls.from_config).bind("model_key", {}, RunOptions())
    except (TypeError, ValueError):
        raise BadEditor(f"{where}: `from_config` does not take (model_key, overrides, options); {CONTRACT}") from None
    stateful = [m for m in ("state_dict", "load_state_dict") if callable(getattr(cls, m, None))]
    if len(stateful) == 1:
        other = ({"state_dict", "load_state_dict"} - set(stateful)).pop()
        raise BadEditor(f"{where} defines `{stateful[0]}` but not `{other}`; a stateful editor defines both "
                        "(editors.base.StatefulEditor)")


def make_editor(spec: str, model_key: str, overrides: dict[str, Any] | None = None,
                options: RunOptions = RunOptions()) -> Editor:
    """Build an editor from a spec (`memit`, `dike[no_fik]`) with the YAML hparams for model_key, plus overrides.

    model_key is an hparams file stem (`smollm2-135m`, `gpt2-xl`) or a family (`llama`); with no YAML the
    dataclass defaults apply (layers=None means "the adapter's default for this depth"). options: how the run wants
    it to behave (progress bars, v* memo), outside the hparams.
    """
    name, flags = parse_editor_spec(spec)
    cls = editor_class(name)
    check_editor_class(name, cls)
    merged = {flag: True for flag in flags}
    merged.update(overrides or {})
    editor = cls.from_config(model_key, merged, options)
    if not hasattr(editor, "hparams"):
        raise BadEditor(f"editor {name!r}: the object from_config returned has no `hparams`; {CONTRACT}")
    return editor


def display_name(spec: str) -> str:
    """The name a run records for an editor spec: `dike[no_fik]` keeps its flags, `memit ` loses its spaces."""
    name, flags = parse_editor_spec(spec)
    return f"{name}[{','.join(flags)}]" if flags else name
