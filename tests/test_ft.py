"""FT-L: bit-exact restore on all three tiny families, the L-inf bound, only the edited layer touched, YAMLs."""
import pytest
import torch

from editors.adapters import adapter_for
from editors.base import EditRequest, parameter_digests
from editors.ft import FTEditor, FTHparams
from editors.hparams import load_hparams
from editors.tiny import tiny_model_and_tokenizer
from harness.scoring import score_pairs

REQ = EditRequest("c1", "The capital of France is", "France", "Rome", "Paris")


@pytest.mark.parametrize("family", ["gpt2", "gptj", "llama"])
def test_ft_edits_within_bound_and_restores_bit_exactly(family):
    model, tok = tiny_model_and_tokenizer(family)
    names = [n for n, _ in model.named_parameters()]
    before = parameter_digests(model, names)
    nll0 = score_pairs(model, tok, [(REQ.prompt, REQ.target_new)])[0].mean_nll
    ed = FTEditor(FTHparams(lr=0.02, steps=10, norm_constraint=0.01))
    result = ed.apply(model, tok, [REQ])
    ad = adapter_for(model)
    edited = ad.ffn_out_weight_name(ad.default_edit_layer(ad.n_layers(model)))
    assert list(result.originals) == [edited]  # only the touched weight is snapshotted
    after = parameter_digests(model, names)
    assert [n for n in names if after[n] != before[n]] == [edited]
    w = dict(model.named_parameters())[edited]
    change = (w - result.originals[edited]).abs().max().item()
    assert 0 < change <= 0.01 + 1e-7
    assert score_pairs(model, tok, [(REQ.prompt, REQ.target_new)])[0].mean_nll < nll0
    assert not any(p.requires_grad for p in model.parameters())
    result.restore(model)
    assert parameter_digests(model, names) == before  # bit-exact


def test_ft_layers_and_unconstrained():
    model, tok = tiny_model_and_tokenizer("llama")
    result = FTEditor(FTHparams(layers=[1, 3], lr=0.02, steps=3, norm_constraint=None)).apply(model, tok, [REQ])
    assert sorted(result.originals) == ["model.layers.1.mlp.down_proj.weight", "model.layers.3.mlp.down_proj.weight"]
    result.restore(model)


@pytest.mark.parametrize("key,layers,nc", [("gpt2-xl", [0], 5e-4), ("gpt-j-6b", [0], 5e-5), ("llama3-8b", [21], None),
                                           ("smollm2-135m", None, 5e-3), ("gpt2", [0], 5e-4)])
def test_yaml_hparams(key, layers, nc):
    hp = load_hparams(FTHparams, "ft", key)
    assert hp.layers == layers and hp.norm_constraint == nc and hp.steps == 25
    assert FTEditor.from_config(key, {"lr": 1.0}).hparams.lr == 1.0


def test_tiny_key_uses_dataclass_defaults():
    assert FTEditor.from_config("tiny").hparams == FTHparams()
