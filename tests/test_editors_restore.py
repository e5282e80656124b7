"""Every locate-and-edit editor runs on tiny GPT-2, GPT-J and LLaMA models, touches only the FFN output weights
of its layers, writes its optimised target value into the weights, and restores the model bit-exactly."""
import dataclasses

import pytest
import torch

from editors.adapters import adapter_for
from editors.base import EditRequest, PreservedFact, parameter_digests
from editors.locate.hooks import block_output, ffn_output
from editors.locate.tokens import subject_last_token_positions
from editors.locate.vstar import build_batch, optimise_target_value
from editors.registry import make_editor
from test_locate_helpers import trained_tiny

# No context prefixes, so k* is the bare prompt's key and the edited weights must reproduce the optimised value at
# the bare prompt's subject token; a tiny λ (MEMIT) / L2 and a full projector (AlphaEdit) make the least-squares
# step exact. A weak weight
# decay and loose clamp suit the tiny models' small activations. Real settings are exercised on SmolLM2.
TINY = {"stats_corpus": "bundled", "stats_n_samples": 150, "stats_max_len": 32, "v_num_grad_steps": 12,
        "v_lr": 1.0, "v_weight_decay": 1e-3, "clamp_norm_factor": 100.0, "context_prefixes": [], "quiet": True}
EDITORS = {"rome": {}, "rome_c": {"mom2_update_weight": 1e-3},
           "memit": {"mom2_update_weight": 1e-6}, "memit_c": {"mom2_update_weight": 1e-6},
           "alphaedit": {"nullspace_threshold": 1e9, "L2": 1e-6}}
REQ = EditRequest("c1", "The capital of France is", "France", "Tokyo", "Paris",
                  preserve=(PreservedFact("The official language of France is", "French"),))


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FINEKED_CACHE", str(tmp_path_factory.getbasetemp() / "fineked-cache"))


def nll(model, tok, prompt, target):
    enc = tok(prompt + " " + target, return_tensors="pt")
    n_prompt = len(tok(prompt).input_ids)
    logp = model(**enc).logits[0, :-1].log_softmax(-1)
    ids = enc.input_ids[0, 1:]
    return -logp[torch.arange(len(ids)), ids][n_prompt - 1:].mean().item()


def site_value(model, tok, ad, site, layer):
    """The FFN output (ROME) or block output (MEMIT, AlphaEdit) at the bare prompt's last subject token."""
    enc, pos = subject_last_token_positions(tok, [REQ.prompt], [REQ.subject])
    with (ffn_output if site == "ffn_output" else block_output)(model, ad, layer, pos) as s:
        model(**enc)
    return s.value[0].double()


@pytest.mark.parametrize("family", ["gpt2", "gptj", "llama"])
@pytest.mark.parametrize("spec", list(EDITORS))
def test_edit_realises_target_value_and_restores_bit_exactly(family, spec):
    model, tok = trained_tiny(family)
    ad = adapter_for(model)
    names = [n for n, _ in model.named_parameters()]
    before = parameter_digests(model, names)
    editor = make_editor(spec, "tiny", {**TINY, **EDITORS[spec]})
    site = "ffn_output" if spec.startswith("rome") else "block_output"
    layer = editor.edit_layers(model, ad)[0 if site == "ffn_output" else -1]
    # the target value, recomputed independently on the unedited model (the optimisation is deterministic)
    tv = optimise_target_value(model, tok, ad, layer, REQ, [], editor.hparams.vstar(), site=site)
    pre = site_value(model, tok, ad, site, layer)
    result = editor.apply(model, tok, [REQ])
    changed = {n for n in names if parameter_digests(model, [n])[n] != before[n]}
    assert changed == {ad.ffn_out_weight_name(l) for l in result.info["layers"]}
    assert set(result.originals) == changed  # only touched weights are copied
    (v0, v1), = result.info["vstar_nll"]
    assert v1 == pytest.approx(tv.nll, abs=1e-5) and v1 < v0 - 0.1
    post = site_value(model, tok, ad, site, layer)
    target = tv.target.double()
    if spec == "memit_c":  # the preserved fact's key pulls against the edit: closer, not exact
        assert (post - target).norm() < 0.5 * (pre - target).norm()
    else:
        assert torch.allclose(post, target, atol=1e-3 * target.norm().item()), (post - target).norm()
    assert {"keys", "vstar", "stats", "solve"} <= set(result.timings)
    result.restore(model)
    assert parameter_digests(model, names) == before


@pytest.mark.parametrize("spec", ["rome", "memit", "alphaedit"])
def test_batch_of_edits_to_one_subject(spec):
    model, tok = trained_tiny("llama")
    reqs = [EditRequest("a", "The capital of France is", "France", "Tokyo"),
            EditRequest("b", "The official language of France is", "France", "Japan")]
    before = [nll(model, tok, r.prompt, r.target_new) for r in reqs]
    editor = make_editor(spec, "tiny", {**TINY, **EDITORS[spec]})
    result = editor.apply(model, tok, reqs)
    after = [nll(model, tok, r.prompt, r.target_new) for r in reqs]
    assert all(a < b - 0.3 for a, b in zip(after, before)), (before, after)
    assert result.info["n_requests"] == 2 and len(result.info["vstar_nll"]) == 2
    result.restore(model)
    assert [nll(model, tok, r.prompt, r.target_new) for r in reqs] == before


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_vstar_loss_on_kept_logits_equals_full_sequence_nll(family):
    """v* computes logits only at target positions (logits_to_keep); its step-0 NLL must equal the mean target
    NLL of every prefixed prompt scored independently on full logits."""
    model, tok = trained_tiny(family)
    prefixes = ["Once upon a time. ", "The weather today is"]
    tv = optimise_target_value(model, tok, adapter_for(model), 1, REQ, prefixes,
                               make_editor("memit", "tiny", TINY).hparams.vstar(), site="block_output")
    expected = sum(nll(model, tok, c + REQ.prompt, REQ.target_new) for c in ["", *prefixes]) / 3
    assert tv.nll_init == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("family,site", [("gpt2", "ffn_output"), ("gptj", "block_output"), ("llama", "ffn_output")])
def test_vstar_prefix_cache_gives_the_uncached_optimisation(family, site):
    """The tokens before the subject are run once into a KV cache (rows left-padded to the longest prefix, position
    ids explicit); every step then runs only the rest. Same init, losses and delta as full sequences, to float
    rounding, and the cached batch is shorter."""
    model, tok = trained_tiny(family)
    ad = adapter_for(model)
    prefixes = ["Once upon a time. ", "The weather today is", "A"]
    hp = make_editor("memit", "tiny", {**TINY, "v_num_grad_steps": 6}).hparams
    runs = {c: optimise_target_value(model, tok, ad, 1, REQ, prefixes,
                                     dataclasses.replace(hp.vstar(), cache_prefixes=c, loss_threshold=0.0), site=site)
            for c in (False, True)}
    full, cached = runs[False], runs[True]
    assert cached.nll_init == pytest.approx(full.nll_init, abs=1e-5)
    assert cached.loss == pytest.approx(full.loss, rel=1e-4)
    assert torch.allclose(cached.init, full.init, atol=1e-5)
    assert float((cached.delta - full.delta).norm()) < 1e-4 * float(full.delta.norm()) + 1e-6
    full_batch = build_batch(tok, REQ, prefixes, "{} is a", "cpu")
    short = build_batch(tok, REQ, prefixes, "{} is a", "cpu", cache_model=model)
    assert short.inputs["input_ids"].shape[1] < full_batch.inputs["input_ids"].shape[1]
    assert short.cache is not None and len(short.cache) == model.config.num_hidden_layers


def test_vstar_prefix_cache_with_a_custom_intervention():
    """DiKE's path: a custom intervention at the subject positions sees the same values with the cache."""
    model, tok = trained_tiny("llama")
    ad = adapter_for(model)
    W = 0.5 * torch.eye(model.config.hidden_size)

    def intervention(delta, positions):
        return block_output(model, ad, 1, positions, add=delta @ W.T)

    cfg = make_editor("memit", "tiny", {**TINY, "v_num_grad_steps": 5}).hparams.vstar()
    ref = torch.ones(model.config.hidden_size)
    out = [optimise_target_value(model, tok, ad, 1, REQ, ["Hello. "], dataclasses.replace(cfg, cache_prefixes=c),
                                 intervention=intervention, init=ref, step_map=lambda d: d @ W.T)
           for c in (False, True)]
    assert out[1].nll_init == pytest.approx(out[0].nll_init, abs=1e-5)
    assert float((out[1].delta - out[0].delta).norm()) < 1e-4 * float(out[0].delta.norm()) + 1e-6


def test_vstar_clamp_acts_on_the_mapped_step():
    """With step_map (DiKE's W5 δ), the norm clamp bounds |step_map(δ)|, not |δ|."""
    model, tok = trained_tiny("llama")
    ad = adapter_for(model)
    cfg = make_editor("memit", "tiny", {**TINY, "clamp_norm_factor": 0.05}).hparams.vstar()
    W = 3.0 * torch.eye(model.config.hidden_size)
    base = optimise_target_value(model, tok, ad, 1, REQ, [], cfg, site="block_output")
    ref = base.init

    def intervention(delta, positions):
        return block_output(model, ad, 1, positions, add=delta @ W.T)

    tv = optimise_target_value(model, tok, ad, 1, REQ, [], cfg, intervention=intervention, init=ref,
                               step_map=lambda d: d @ W.T)
    bound = float(0.05 * ref.norm())
    assert float(base.delta.norm()) == pytest.approx(bound, rel=1e-4)  # the small clamp binds
    assert float((tv.delta @ W.T).norm()) == pytest.approx(bound, rel=1e-4)  # ... on W δ, so |δ| is a third of it
