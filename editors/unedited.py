"""The unedited model: an editor that changes nothing, for the floor and ceiling rows of every table."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from editors.base import EditRequest, EditResult, HparamsEditor


@dataclass
class UneditedHparams:
    pass


class UneditedEditor(HparamsEditor):
    name = "unedited"
    Hparams = UneditedHparams

    def apply(self, model: Any, tok: Any, requests: Sequence[EditRequest]) -> EditResult:
        return EditResult(timings={"edit_s": 0.0}, info={"n_requests": len(requests)})
