"""End to end on the embedded SmolLM2: rome, memit and alphaedit make a CounterFact case prefer o*, restore exactly."""
import pytest
import torch

from editors.base import EditRequest, parameter_digests
from editors.models import load_model
from editors.registry import make_editor

CASE = EditRequest("0", "The mother tongue of Danielle Darrieux is", "Danielle Darrieux", "English", "French")


def nll(model, tok, prompt, target):
    enc = tok(prompt + " " + target, return_tensors="pt")
    n = len(tok(prompt).input_ids)
    with torch.no_grad():
        logp = model(**enc).logits[0, :-1].log_softmax(-1)
    ids = enc.input_ids[0, 1:]
    return -logp[torch.arange(len(ids)), ids][n - 1:].mean().item()


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["rome", "memit", "alphaedit"])
def test_smollm2_edit_prefers_new_object_and_restores(spec):
    model, tok = load_model("smollm2-135m")
    assert nll(model, tok, CASE.prompt, "French") < nll(model, tok, CASE.prompt, "English")
    # the YAML's settings with a smaller statistics sample and fewer prefixes, to stay well under a minute
    editor = make_editor(spec, "smollm2-135m", {"stats_n_samples": 300, "context_prefixes": [[5, 2], [10, 2]],
                                                 "quiet": True})
    names = [n for n, _ in model.named_parameters()]
    before = parameter_digests(model, names)
    result = editor.apply(model, tok, [CASE])
    assert nll(model, tok, CASE.prompt, "English") < nll(model, tok, CASE.prompt, "French")
    result.restore(model)
    assert parameter_digests(model, names) == before
