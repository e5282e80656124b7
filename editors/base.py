"""The Editor protocol (DESIGN.md "Interfaces") and the exact-restore EditResult.

Editors see only EditRequests; they know nothing about datasets or reports.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, Sequence, runtime_checkable

import torch

from editors.hparams import load_hparams


@dataclass(frozen=True)
class PreservedFact:
    """Another fact of the edited subject that ROME-C/MEMIT-C/DiKE may preserve.

    The harness fills these from the constraint pool (krd_train), never from evaluation facts.
    """

    prompt: str
    target: str


@dataclass(frozen=True)
class EditRequest:
    case_id: str
    prompt: str  # contains `subject` literally, e.g. "The capital of France is"
    subject: str
    target_new: str  # no leading space
    target_true: str | None = None
    preserve: tuple[PreservedFact, ...] = ()

    def __post_init__(self) -> None:
        if self.subject not in self.prompt:
            raise ValueError(f"case {self.case_id}: prompt {self.prompt!r} does not contain subject {self.subject!r}")


def tensor_digest(t: torch.Tensor) -> str:
    """Hash of a tensor's exact bytes, for the bit-exact restore check."""
    return hashlib.sha256(t.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes()).hexdigest()


@dataclass
class EditResult:
    """What an edit changed, and how to undo it exactly.

    `originals` holds copies of only the touched parameters, keyed by parameter name.
    """

    originals: dict[str, torch.Tensor] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def snapshot(model: torch.nn.Module, names: Sequence[str]) -> "EditResult":
        params = dict(model.named_parameters())
        return EditResult(originals={n: params[n].detach().clone() for n in names})

    def restore(self, model: torch.nn.Module) -> None:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, orig in self.originals.items():
                params[name].copy_(orig)

    def digests(self) -> dict[str, str]:
        return {n: tensor_digest(t) for n, t in self.originals.items()}


def weights_digest(module: torch.nn.Module) -> str:
    """Hash of the names and exact bytes of every (deduplicated) parameter and buffer: the identity of a module's
    current weights (the v* memo's key). locate.fingerprint.model_fingerprint, by contrast, names the base model and
    deliberately ignores the weights editors touch."""
    tensors = [*module.named_parameters(), *module.named_buffers()]
    lines = (f"{name}:{t.dtype}:{tuple(t.shape)}:{tensor_digest(t)}" for name, t in tensors)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def parameter_digests(model: torch.nn.Module, names: Sequence[str]) -> dict[str, str]:
    params = dict(model.named_parameters())
    return {n: tensor_digest(params[n]) for n in names}


@dataclass(frozen=True)
class RunOptions:
    """How a run wants the editor to behave, outside its hparams (and outside their hash): the harness passes these
    to from_config instead of setting attributes afterwards."""

    quiet: bool = False  # no progress bars (statistics, states)
    vstar_cache: Path | None = None  # folder of the v* memo (editors.locate.vstar_cache), for editors that optimise v*


@runtime_checkable
class Editor(Protocol):
    """An editor: a name, a hparams dataclass, from_config(), and apply(), whose result restores the model.

    Editors keep any state (e.g. AlphaEdit's accumulated keys) on the instance; one that does also implements
    StatefulEditor, so a sequential run can be saved and resumed. editors.registry checks a loaded editor against
    these members and names the missing one.
    """

    name: ClassVar[str]
    hparams: Any

    @classmethod
    def from_config(cls, model_key: str, overrides: dict[str, Any] | None, options: RunOptions) -> "Editor":
        """One editor with the YAML hparams for model_key (an hparams file stem or a model family), then overrides."""
        ...

    def apply(self, model: torch.nn.Module, tok: Any, requests: Sequence[EditRequest]) -> EditResult: ...


class HparamsEditor:
    """What the built-in editors share: a `name`, a `Hparams` dataclass that from_config fills from
    editors/hparams/NAME.yaml for the model (then the overrides), and the run's options. A subclass adds apply()."""

    name: ClassVar[str] = ""
    Hparams: ClassVar[type]

    def __init__(self, hparams: Any | None = None, options: RunOptions = RunOptions()):
        self.hparams = hparams if hparams is not None else self.Hparams()
        self.options = options

    @classmethod
    def from_config(cls, model_key: str, overrides: dict[str, Any] | None = None,
                    options: RunOptions = RunOptions()) -> "HparamsEditor":
        return cls(load_hparams(cls.Hparams, cls.name, model_key, overrides), options)


@runtime_checkable
class StatefulEditor(Editor, Protocol):
    """Optional: an editor whose state outlives one apply() (a sequential run saves and reloads it)."""

    def state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...
