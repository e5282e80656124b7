"""Subject tokens are found by character span, whatever the padding side, spacing convention or BOS."""
import pytest
import torch

from editors.adapters import adapter_for
from editors.locate.hooks import block_output, ffn_key, ffn_output
from editors.locate.keys import keys_at_subject, keys_for_pairs, with_prefixes
from editors.locate.tokens import subject_last_token_positions
from editors.tiny import tiny_model_and_tokenizer, tiny_tokenizer

PROMPTS = ["The capital of France is", "Danielle Darrieux speaks", "Paris is the capital of"]
SUBJECTS = ["France", "Danielle Darrieux", "Paris"]  # mid-prompt, several tokens, prompt start


@pytest.mark.parametrize("style", ["gpt2", "llama"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_last_subject_token_decodes_to_subject_end(style, side):
    tok = tiny_tokenizer(style)
    enc, pos = subject_last_token_positions(tok, PROMPTS, SUBJECTS, side)
    for i, (p, s) in enumerate(zip(PROMPTS, SUBJECTS)):
        ids = enc["input_ids"][i]
        upto = tok.decode(ids[: pos[i] + 1], skip_special_tokens=True)
        assert upto.strip().endswith(s), (upto, s)
        assert s.split()[-1] not in tok.decode(ids[pos[i] + 1:], skip_special_tokens=True).split()[:1]
        assert enc["attention_mask"][i, pos[i]] == 1
    if side == "left":  # the shortest prompt is padded at the front, so its positions shift
        lengths = enc["attention_mask"].sum(1)
        assert any(l < enc["input_ids"].shape[1] for l in lengths)


def test_both_padding_sides_give_the_same_tokens():
    tok = tiny_tokenizer("gpt2")
    (el, pl), (er, pr) = [subject_last_token_positions(tok, PROMPTS, SUBJECTS, s) for s in ("left", "right")]
    for i in range(len(PROMPTS)):
        assert el["input_ids"][i, pl[i]] == er["input_ids"][i, pr[i]]


def test_missing_subject_names_the_case():
    with pytest.raises(ValueError, match="does not contain its subject 'Berlin'"):
        subject_last_token_positions(tiny_tokenizer("gpt2"), ["The capital of France is"], ["Berlin"])


def test_search_from_skips_a_subject_inside_the_prefix():
    tok = tiny_tokenizer("gpt2")
    texts, starts = with_prefixes(["France is in"], ["I like France. "])
    enc, pos = subject_last_token_positions(tok, texts, ["France"] * 2, "right", starts)
    _, first = subject_last_token_positions(tok, texts[1:], ["France"], "right")
    assert first[0] < pos[1]
    assert tok.decode(enc["input_ids"][1, : pos[1] + 1]) == "I like France. France"


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_hooks_read_what_the_modules_compute(family):
    model, tok = tiny_model_and_tokenizer(family)
    ad = adapter_for(model)
    enc, pos = subject_last_token_positions(tok, PROMPTS, SUBJECTS, "left")
    with ffn_key(model, ad, 2, pos) as k, ffn_output(model, ad, 2, pos) as o, block_output(model, ad, 2, pos) as h:
        out = model(**enc, output_hidden_states=True)
    W = ad.weight_as_out_in(ad.ffn_out_weight(model, 2))
    bias = getattr(model.get_submodule(ad.ffn_out_module_name(2)), "bias", None)
    expect = k.value @ W.T + (0 if bias is None else bias)
    assert torch.allclose(o.value, expect, atol=1e-5)
    rows = torch.arange(len(PROMPTS))
    assert torch.allclose(h.value, out.hidden_states[3][rows, pos], atol=1e-6)


def test_adding_at_the_block_output_changes_later_logits_only_from_that_token():
    model, tok = tiny_model_and_tokenizer("gpt2")
    ad = adapter_for(model)
    enc, pos = subject_last_token_positions(tok, PROMPTS[:1], SUBJECTS[:1], "right")
    base = model(**enc).logits
    with block_output(model, ad, 1, pos, add=5 * torch.randn(64, generator=torch.Generator().manual_seed(0))):
        edited = model(**enc).logits
    assert torch.allclose(base[0, : pos[0]], edited[0, : pos[0]], atol=1e-6)  # causal: earlier tokens unchanged
    assert not torch.allclose(base[0, pos[0]:], edited[0, pos[0]:], atol=1e-3)


def test_keys_ignore_text_after_the_subject_and_average_prefixes():
    model, tok = tiny_model_and_tokenizer("llama")
    ad = adapter_for(model)
    a = keys_at_subject(model, tok, ad, 1, ["The capital of France is", "The capital of France"], ["France"] * 2)
    assert torch.allclose(a[0], a[1], atol=1e-6)
    prefixes = ["I like Rome. ", "You were in Tokyo. "]
    avg = keys_for_pairs(model, tok, ad, 1, [("France is in", "France")], prefixes)[0]
    texts, starts = with_prefixes(["France is in"], prefixes)
    each = keys_at_subject(model, tok, ad, 1, texts, ["France"] * 3, starts)
    assert torch.allclose(avg, each.mean(0), atol=1e-6)
