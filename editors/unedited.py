"""The unedited model: an editor that changes nothing, for the floor and ceiling rows of every table."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from editors.base import EditRequest, EditResult, RunOptions
from editors.hparams import load_hparams


@dataclass
class UneditedHparams:
    pass


class UneditedEditor:
    name: ClassVar[str] = "unedited"

    def __init__(self, hparams: UneditedHparams | None = None):
        self.hparams = hparams or UneditedHparams()

    @classmethod
    def from_config(cls, model_key: str, overrides: dict[str, Any] | None = None,
                    options: RunOptions = RunOptions()) -> "UneditedEditor":
        return cls(load_hparams(UneditedHparams, cls.name, model_key, overrides))

    def apply(self, model: Any, tok: Any, requests: Sequence[EditRequest]) -> EditResult:
        return EditResult(timings={"edit_s": 0.0}, info={"n_requests": len(requests)})
