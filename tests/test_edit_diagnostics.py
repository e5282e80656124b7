"""Per-edit diagnostics of ROME, MEMIT and AlphaEdit (issue 13 §2), and -C variants whose preserved keys constrain
(§3), checked against forward passes of the edited model and closed forms computed here."""
import pytest
import torch

from editors.adapters import adapter_for
from editors.base import EditRequest, PreservedFact
from editors.locate.hooks import block_output
from editors.locate.keys import keys_at_subject
from editors.locate.tokens import subject_last_token_positions
from editors.locate.vstar import optimise_target_value
from editors.registry import make_editor
from test_locate_helpers import trained_tiny

LAYER = 1
BASE = {"layers": [LAYER], "stats_corpus": "identity", "v_num_grad_steps": 10, "v_lr": 1.0, "v_weight_decay": 1e-3,
        "clamp_norm_factor": 100.0, "context_prefixes": [], "quiet": True}
REQ = EditRequest("c1", "The capital of France is", "France", "Tokyo", "Paris",
                  preserve=(PreservedFact("The official language of France is", "French"),))


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FINEKED_CACHE", str(tmp_path_factory.getbasetemp() / "fineked-cache"))


@pytest.fixture(scope="module")
def tiny():
    model, tok = trained_tiny("llama")
    return model, tok, adapter_for(model)


def h_s(model, tok, ad, prompt=REQ.prompt):
    enc, pos = subject_last_token_positions(tok, [prompt], [REQ.subject])
    with torch.no_grad(), block_output(model, ad, LAYER, pos) as s:
        model(**enc)
    return s.value[0].double()


def run(model, tok, ad, spec, overrides):
    """(diagnostics of the one edit, Δh_s by forward passes, ΔW (out, in) float64); the model is restored."""
    w = ad.ffn_out_weight(model, LAYER)
    w0, h0 = ad.weight_as_out_in(w).detach().double().clone(), h_s(model, tok, ad)
    res = make_editor(spec, "tiny", {**BASE, **overrides}).apply(model, tok, [REQ])
    dh, dW = h_s(model, tok, ad) - h0, ad.weight_as_out_in(w).detach().double() - w0
    res.restore(model)
    (d,) = res.info["diagnostics"]
    return d, dh, dW


def test_memit_writes_the_share_its_closed_form_predicts(tiny):
    """One layer, C = I, bare key k: Δh_s = δ kᵀk/(λ + kᵀk), so at λ = kᵀk written_frac = written_norm = 1/2; δ is
    recomputed here by the (deterministic) optimiser, Δh_s by forward passes."""
    model, tok, ad = tiny
    k = keys_at_subject(model, tok, ad, LAYER, [REQ.prompt], [REQ.subject])[0].double()
    lam = float(k @ k)
    d, dh, _ = run(model, tok, ad, "memit", {"mom2_update_weight": lam})
    ed = make_editor("memit", "tiny", {**BASE, "mom2_update_weight": lam})
    tv = optimise_target_value(model, tok, ad, LAYER, REQ, [], ed.hparams.vstar(), site="block_output")
    t = tv.delta.double()
    assert float(dh @ t / (t @ t)) == pytest.approx(0.5, abs=1e-4)
    assert d["written_frac"] == pytest.approx(float(dh @ t / (t @ t)), abs=1e-4)
    assert d["written_norm"] == pytest.approx(float(dh.norm() / t.norm()), abs=1e-4)
    assert d["vstar_nll"] == pytest.approx(tv.nll, abs=1e-5) and d["vstar_nll"] < d["vstar_nll_init"]


@pytest.mark.parametrize("spec", ["rome", "alphaedit"])
def test_exact_writers_write_all_of_vstar(tiny, spec):
    """ROME writes v* at k* exactly, and AlphaEdit with a full projector and L2 → 0 does too: written_frac = 1
    at the bare prompt, whose key is k* here."""
    model, tok, ad = tiny
    extra = {"nullspace_threshold": 1e9, "L2": 1e-6} if spec == "alphaedit" else {}
    d, dh, _ = run(model, tok, ad, spec, extra)
    assert d["written_frac"] == pytest.approx(1.0, abs=1e-3) and d["written_norm"] == pytest.approx(1.0, abs=1e-3)
    assert dh.norm() > 0


def test_step_limit_flag(tiny):
    """A budget of 1e-3‖h_s‖ ends on the clamp; an optimisation stopped at step 0 (δ = 0) does not."""
    model, tok, ad = tiny
    hit, dh, _ = run(model, tok, ad, "memit", {"mom2_update_weight": 1e-6, "clamp_norm_factor": 1e-3})
    assert hit["vstar_at_limit"] is True
    assert dh.norm().item() == pytest.approx(1e-3 * h_s(model, tok, ad).norm().item(), rel=1e-3)
    free, _, _ = run(model, tok, ad, "memit", {"mom2_update_weight": 1e-6, "v_loss_threshold": 1e9})
    assert free["vstar_at_limit"] is False and free["vstar_steps"] == 1


@pytest.mark.parametrize("spec", ["rome_c", "memit_c"])
def test_preserved_keys_constrain(tiny, spec):
    """The -C variants keep the preserved fact's key output: ‖ΔW k_p‖ falls well below the plain editor's, at a
    preserve_weight that matters (ROME-C: it weighs against λC). With K_keep dropped the two would be equal."""
    model, tok, ad = tiny
    plain = spec[:-2]
    lam = {"rome_c": 15000.0, "memit_c": 1.0}[spec]
    # k_p is 0.9986 cosine-close to k* here (same subject token), as on SmolLM2: keeping it takes a large weight
    k_p = keys_at_subject(model, tok, ad, LAYER, [REQ.preserve[0].prompt], [REQ.subject])[0].double()
    weight = {"rome_c": 100 * lam, "memit_c": 10.0}[spec]
    _, _, dW = run(model, tok, ad, plain, {"mom2_update_weight": lam})
    d, _, dW_c = run(model, tok, ad, spec, {"mom2_update_weight": lam, "preserve_weight": weight})
    assert (dW_c @ k_p).norm() < 0.5 * (dW @ k_p).norm()
    if spec == "rome_c":  # ROME still writes v* at k* exactly
        assert d["written_frac"] == pytest.approx(1.0, abs=1e-3)


def test_rome_c_yaml_default_weighs_against_lambda():
    """ROME writes k* exactly, so its preserved keys matter only through w/λ: the SmolLM2 default must not be the
    w = 1 that, at λ = 15000, left ROME-C equal to ROME."""
    hp = make_editor("rome_c", "smollm2-135m").hparams
    assert hp.preserve_weight >= hp.mom2_update_weight
