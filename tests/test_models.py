"""Model loading by name, the SmolLM2 tokenizer round trip, and adapters on the three tiny families."""
import pytest
import torch

from editors.adapters import UnknownModelFamily, adapter_for
from editors.models import ModelLoadError, load_model, model_key
from editors.tiny import tiny_model_and_tokenizer

FAMILIES = ["gpt2", "gptj", "llama"]


@pytest.mark.slow
def test_smollm2_tokenizer_round_trip_and_paris():
    model, tok = load_model("smollm2-135m")
    assert tok("The capital of France is")["input_ids"] == [504, 3575, 282, 4649, 314]
    assert tok(" Paris", add_special_tokens=False)["input_ids"] == [7042]
    assert tok.decode([504, 3575, 282, 4649, 314, 7042]) == "The capital of France is Paris"
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[504, 3575, 282, 4649, 314]])).logits
    assert logits[0, -1].argmax().item() == 7042
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30


def test_unknown_model_is_one_line_naming_the_known_ones(tmp_path):
    with pytest.raises(ModelLoadError) as err:
        load_model(str(tmp_path / "no-such-model"))
    msg = str(err.value)
    assert "\n" not in msg and "smollm2-135m" in msg and "gpt2-xl" in msg


def test_model_key():
    assert model_key("smollm2-135m") == "smollm2-135m"
    assert model_key("openai-community/gpt2-xl") == "gpt2-xl"
    assert model_key("/models/My-Model/") == "my-model"


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_paths_resolve_and_orientation_is_out_in(family):
    model, _ = tiny_model_and_tokenizer(family)
    ad = adapter_for(model)
    n = ad.n_layers(model)
    assert n == 4 and 0 <= ad.default_edit_layer(n) < ad.default_repr_layer(n) < n
    for path in (ad.blocks, ad.final_norm, ad.lm_head, ad.embed):
        model.get_submodule(path)
    hidden = model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.n_embd
    for layer in range(n):
        module = model.get_submodule(ad.ffn_out_module_name(layer))
        w = ad.weight_as_out_in(ad.ffn_out_weight(model, layer))
        assert w.shape[0] == hidden and w.shape[1] > hidden  # (d_out = hidden, d_in = FFN width)
        x = torch.randn(3, w.shape[1])
        bias = getattr(module, "bias", None)
        expected = x @ w.T + (bias if bias is not None else 0)
        assert torch.allclose(module(x), expected, atol=1e-5)  # W k is the module's own output
        delta = torch.randn_like(w)
        assert ad.delta_to_param(delta).shape == ad.ffn_out_weight(model, layer).shape


def test_unknown_family_names_the_known_ones():
    class Cfg:
        model_type = "mamba"

    class M(torch.nn.Module):
        config = Cfg()
    with pytest.raises(UnknownModelFamily, match="known: .*gpt2.*llama"):
        adapter_for(M())
