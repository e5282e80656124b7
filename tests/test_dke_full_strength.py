"""DKE at full strength (issue 13 §2, §5), checked against computations made here from the KRD's raw weights and
direct forward passes of the edited model, never against numbers the editor reports about itself."""
import pytest
import torch
import torch.nn.functional as F

from editors.adapters import adapter_for
from editors.base import EditRequest
from editors.dike.checkpoint import save_krd
from editors.dike.krd import KRD, KRDConfig
from editors.dike.states import subject_and_relation_states, target_batch
from editors.dike.train import KRDTrainConfig, train_krd
from editors.locate.fingerprint import model_fingerprint
from editors.locate.hooks import block_output
from editors.locate.keys import keys_at_subject
from editors.locate.vstar import VStarConfig, optimise_target_value
from editors.registry import make_editor
from editors.tiny import tiny_model_and_tokenizer
from tests.test_krd_training import tiny_samples

LAYER, REPR = 1, 2
REQ = EditRequest("c1", "The capital of France is", "France", "Berlin", "Paris")
REQ_LAST = EditRequest("c2", "The capital of France", "France", "Berlin", "Paris")
# bare prompt only and C = I: the update's key is the bare prompt's key, so every quantity has a closed form here
BASE = dict(layers=[LAYER], repr_layer=REPR, stats_corpus="identity", context_prefixes=[], quiet=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, tok = tiny_model_and_tokenizer("llama")
    ad = adapter_for(model)
    # random init, lr 1e-3, β = 1 (KRDTrainConfig's defaults before train-krd's moved into it): a KRD whose
    # reconstruction ĥ_s is not h_s, which the keep_recon_residual / kl_reference tests need
    cfg = KRDTrainConfig(layer=LAYER, repr_layer=REPR, epochs=1, batch_size=8, init="random", lr=1e-3, beta=1.0)
    res = train_krd(model, tok, ad, tiny_samples(), cfg, quiet=True)
    path = tmp_path_factory.mktemp("krd")
    save_krd(path, res.krd, {"model_fingerprint": model_fingerprint(model), "layer": LAYER, "repr_layer": REPR})
    return model, tok, ad, path, res.krd


def h_s(model, tok, ad, req=REQ):
    return subject_and_relation_states(model, tok, ad, LAYER, REPR, [req.prompt], [req.subject])


def bare_key(model, tok, ad, req=REQ):
    return keys_at_subject(model, tok, ad, LAYER, [req.prompt], [req.subject])[0].double()


def target_nll(model, tok, req=REQ):
    """Mean NLL of o* after the bare prompt, by a plain forward pass of the model as it is."""
    b = target_batch(tok, [req.prompt], [req.subject], [req.target_new])
    with torch.no_grad():
        logp = model(**b.inputs, logits_to_keep=b.keep).logits.float().log_softmax(-1)
    nll = -logp.gather(-1, b.target_ids.unsqueeze(-1)).squeeze(-1)
    return float((nll * b.target_mask).sum() / b.target_mask.sum())


def edit(model, tok, ad, overrides, req=REQ):
    """(editor, result, ΔW (out, in) float64, Δh_s measured by forward passes, o*'s NLL after the edit); the
    model is restored."""
    ed = make_editor("dike", "tiny", {**BASE, **overrides})
    w = ad.ffn_out_weight(model, LAYER)
    w0, h0 = ad.weight_as_out_in(w).detach().double().clone(), h_s(model, tok, ad, req)[0][0].double()
    res = ed.apply(model, tok, [req])
    dW = ad.weight_as_out_in(w).detach().double() - w0
    dh = h_s(model, tok, ad, req)[0][0].double() - h0
    nll = target_nll(model, tok, req)
    res.restore(model)
    return ed, res, dW, dh, nll


def test_update_equals_an_independent_dke(tiny):
    """METHOD.md §5.2 with the issue-13 defaults, rebuilt here from the KRD's weights: δ on z_r, R = W5 δ, the
    optimiser applies s_j A⁻¹ R in each v* row j with s_j = k_jᵀk/(λ + kᵀk) (C = I, k_j the row's own key) and
    A = W3ᵀW3 + I, the step limit is c‖h_s‖ on the bare prompt's shift; then ΔW = A⁻¹ R kᵀ/(λ + kᵀk). The editor's ΔW, its Δh_s (a forward pass) and every diagnostic must agree."""
    model, tok, ad, path, krd = tiny
    k = bare_key(model, tok, ad)
    lam = float(k @ k)  # s = 1/2
    cfg = dict(krd_path=str(path), mom2_update_weight=lam, v_num_grad_steps=6, clamp_norm_factor=0.75)
    ed, res, dW, dh, _ = edit(model, tok, ad, cfg)

    W = {n: getattr(krd, n).weight.detach().double() for n in ("W1", "W2", "W3", "W4", "W5", "W6")}
    hs, hr = (x[0].double() for x in h_s(model, tok, ad))
    z_r, z_u = F.gelu(W["W1"] @ hs + W["W2"] @ hr), F.gelu(W["W3"] @ hs + W["W4"] @ hr)
    assert z_r.norm() > 0 and z_u.norm() > 0
    s = float(k @ k) / (lam + float(k @ k))
    # the KL prompt's subject key is another key: the update writes k_klᵀk/(λ + kᵀk) of A⁻¹R there
    k_kl = keys_at_subject(model, tok, ad, LAYER, [ed.hparams.vstar().kl_prompt.format(REQ.subject)],
                           [REQ.subject])[0].double()
    rows = torch.tensor([[s], [float(k_kl @ k) / (lam + float(k @ k))]], dtype=torch.float32)
    A = W["W3"].T @ W["W3"] + torch.eye(len(hs), dtype=torch.float64)
    M = (s * torch.linalg.inv(A)).float()
    A_inv = torch.linalg.inv(A).float()
    W5 = W["W5"].float()

    def intervention(delta, positions):  # rows: the bare prompt, the KL prompt
        return block_output(model, ad, LAYER, positions, add=rows * ((delta @ W5.T) @ A_inv.T))

    tv = optimise_target_value(model, tok, ad, LAYER, REQ, [], ed.hparams.vstar(), intervention=intervention,
                               init=hs.float(), step_map=lambda d: (d @ W5.T) @ M.T)
    R = W["W5"] @ tv.delta.double()
    expected = torch.linalg.solve(A, R)[:, None] * k[None, :] / (lam + float(k @ k))
    assert torch.allclose(dW, expected, rtol=0, atol=1e-4 * expected.abs().max())
    shift = M.double() @ R  # what the closed form writes at h_s: s A⁻¹ R
    assert torch.allclose(dh, shift, rtol=0, atol=1e-3 * shift.norm())

    (d,) = res.info["diagnostics"]
    assert d["vstar_nll"] == pytest.approx(tv.nll, abs=1e-3)
    assert d["vstar_at_limit"] == tv.at_limit
    assert d["share"] == pytest.approx(s, rel=1e-6)
    assert d["fik_keep"] == pytest.approx(float(torch.linalg.solve(A, R).norm() / R.norm()), rel=1e-3)
    assert d["written_frac"] == pytest.approx(float(dh @ shift / (shift @ shift)), rel=1e-3)
    assert d["written_frac"] == pytest.approx(1.0, abs=1e-3)  # bare-prompt key = the update's key
    assert d["written_norm"] == pytest.approx(float(dh.norm() / shift.norm()), rel=1e-3)


def _hand_krd(d, route):
    """A KRD whose only path to ĥ_s is z_r (route="r": W6 = 0) or z_u (route="u": W5 = 0)."""
    krd = KRD(KRDConfig(d))
    with torch.no_grad():
        (krd.W6 if route == "r" else krd.W5).weight.zero_()
        (krd.W5 if route == "r" else krd.W6).weight.copy_(torch.eye(d))
    return krd


@pytest.mark.parametrize("route", ["r", "u"])
def test_delta_moves_z_r_only(tiny, tmp_path, route):
    """With W6 = 0 only z_r reaches h_s, so δ on z_r edits; with W5 = 0 nothing δ does on z_r reaches h_s, and
    the edit writes nothing. Optimising δ on z_u would reverse both."""
    model, tok, ad, _, _ = tiny
    d = model.config.hidden_size
    save_krd(tmp_path, _hand_krd(d, route),
             {"model_fingerprint": model_fingerprint(model), "layer": LAYER, "repr_layer": REPR})
    _, res, dW, dh, _ = edit(model, tok, ad, dict(krd_path=str(tmp_path), mom2_update_weight=1.0,
                                                  v_num_grad_steps=4))
    if route == "r":
        assert dW.abs().max() > 1e-4 and dh.norm() > 1e-3
    else:
        assert dW.abs().max() == 0 and res.info["residual_norms"] == [0.0]


def test_default_step_limit_is_relative_to_h_s(tiny):
    """Defaults (no clamp_on given): with a budget far too small to reach o*, the edited model's h_s moves by
    exactly c‖h_s‖ (λ → 0 writes the whole shift). A limit relative to ‖z_r‖ would move it by another amount."""
    model, tok, ad, path, _ = tiny
    c = 0.05
    _, res, _, dh, _ = edit(model, tok, ad, dict(krd_path=str(path), mom2_update_weight=1e-6, clamp_norm_factor=c,
                                                 v_num_grad_steps=6, v_lr=1.0))
    hs = h_s(model, tok, ad)[0][0].double()
    assert dh.norm().item() == pytest.approx(c * hs.norm().item(), rel=1e-3)
    assert res.info["diagnostics"][0]["vstar_at_limit"] is True


def test_vstar_through_the_shrink_predicts_o_star_after_the_update(tiny):
    """At λ = 3kᵀk the closed form writes only s = 1/4 of A⁻¹R. v* optimised through that shrink predicts o* in the
    edited model: o*'s NLL by a plain forward pass matches the v* NLL and is far below the unedited one. v*
    optimised without it (the old behaviour) leaves the edited model well short of its own v* NLL. The prompt ends
    at the subject, so o*'s only logit is read at h_s itself."""
    model, tok, ad, path, _ = tiny
    req = REQ_LAST
    k = bare_key(model, tok, ad, req)
    nll0 = target_nll(model, tok, req)
    cfg = dict(krd_path=str(path), mom2_update_weight=3 * float(k @ k), v_num_grad_steps=25, v_lr=0.5,
               clamp_norm_factor=4.0, kl_factor=0.0, v_weight_decay=0.0)
    _, res, _, _, nll = edit(model, tok, ad, cfg, req)
    v_nll = res.info["diagnostics"][0]["vstar_nll"]
    assert nll0 - v_nll > 1.0  # v* found a value that predicts o*
    assert abs(nll - v_nll) < 0.05 * (nll0 - v_nll)
    _, res_old, _, _, nll_old = edit(model, tok, ad, {**cfg, "through_shrink": False}, req)
    v_old = res_old.info["diagnostics"][0]["vstar_nll"]
    assert nll_old - v_old > 0.3 * (nll0 - v_old)
    assert nll < nll_old


def test_clean_kl_reference_ignores_the_substituted_h_hat(tiny):
    """Without keep_recon_residual the shift at δ = 0 is ĥ_s − h_s ≠ 0: the clean KL reference then differs from
    the substituted one, so v* differs; with keep_recon_residual (the default) the shift at δ = 0 is 0 and both
    references are the clean model."""
    model, tok, ad, path, _ = tiny
    cfg = dict(krd_path=str(path), mom2_update_weight=1.0, v_num_grad_steps=6, kl_factor=1.0)
    old = {"keep_recon_residual": False}
    _, _, clean, _, _ = edit(model, tok, ad, {**cfg, **old})
    _, _, subst, _, _ = edit(model, tok, ad, {**cfg, **old, "kl_reference": "substituted"})
    assert not torch.allclose(clean, subst)
    _, _, a, _, _ = edit(model, tok, ad, cfg)
    _, _, b, _, _ = edit(model, tok, ad, {**cfg, "kl_reference": "substituted"})
    assert torch.equal(a, b)


def test_mu_weights_the_w3_term(tiny):
    """μ scales W3ᵀW3 in A: μ = 0 writes the same as no_fik (A = I), and ‖A⁻¹R‖/‖R‖ falls as μ grows."""
    model, tok, ad, path, _ = tiny
    cfg = dict(krd_path=str(path), mom2_update_weight=1.0, v_num_grad_steps=4)
    keeps = [edit(model, tok, ad, {**cfg, "fik_weight": mu})[1].info["diagnostics"][0]["fik_keep"]
             for mu in (0.0, 1.0, 10.0)]
    assert keeps[0] == pytest.approx(1.0) and keeps[0] > keeps[1] > keeps[2]
    _, _, zero, _, _ = edit(model, tok, ad, {**cfg, "fik_weight": 0.0})
    ed = make_editor("dike[no_fik]", "tiny", {**BASE, **cfg})
    w = ad.ffn_out_weight(model, LAYER)
    w0 = ad.weight_as_out_in(w).detach().double().clone()
    res = ed.apply(model, tok, [REQ])
    no_fik = ad.weight_as_out_in(w).detach().double() - w0
    res.restore(model)
    assert torch.allclose(zero, no_fik, atol=1e-7)


def test_each_vstar_row_gets_the_share_written_at_its_own_key(tiny):
    """With context prefixes the update is solved for the average key k, and row j of the v* batch (bare prompt,
    prefixed prompts, KL prompt) has its own key k_j, where the closed form writes s_j A⁻¹R with
    s_j = k_jᵀk/(λ + kᵀk) (C = I). Rebuilt here from raw keys and KRD weights: the optimiser must have applied
    exactly those per-row shifts (ΔW agrees), and forward passes of the edited model must show them at every row.
    One scalar share for all rows (the old behaviour) over-predicts the bare prompt's shift on SmolLM2 by up to 5x."""
    from editors.locate.keys import with_prefixes
    from editors.locate.prefixes import prefix_groups

    model, tok, ad, path, krd = tiny
    pre = [[3, 2]]
    prefixes = prefix_groups(model, tok, pre, 0)
    texts, starts = with_prefixes([REQ.prompt], prefixes)
    kl_text = "{} is a".format(REQ.subject)
    keys = keys_at_subject(model, tok, ad, LAYER, [*texts, kl_text], [REQ.subject] * (len(texts) + 1),
                           [*starts, 0]).double()
    k = keys[:-1].mean(0)  # the update's key: MEMIT's average over the bare and prefixed prompts
    lam = float(k @ k)
    shares = keys @ k / (lam + float(k @ k))
    assert float(shares.max() - shares.min()) > 0.1  # the rows' shares do differ here
    cfg = dict(krd_path=str(path), mom2_update_weight=lam, v_num_grad_steps=6, clamp_norm_factor=0.75,
               context_prefixes=pre)
    ed, res, dW, _, _ = edit(model, tok, ad, cfg)

    W = {n: getattr(krd, n).weight.detach().double() for n in ("W3", "W5")}
    A_inv = torch.linalg.inv(W["W3"].T @ W["W3"] + torch.eye(W["W3"].shape[0], dtype=torch.float64))
    hs = h_s(model, tok, ad)[0][0].float()
    rows, A_inv32, W5 = shares.float()[:, None], A_inv.float(), W["W5"].float()

    def intervention(delta, positions):
        return block_output(model, ad, LAYER, positions, add=rows * ((delta @ W5.T) @ A_inv32.T))

    tv = optimise_target_value(model, tok, ad, LAYER, REQ, prefixes, ed.hparams.vstar(), intervention=intervention,
                               init=hs, step_map=lambda d: rows[0] * ((d @ W5.T) @ A_inv32.T))
    R = W["W5"] @ tv.delta.double()
    expected = (A_inv @ R)[:, None] * k[None, :] / (lam + float(k @ k))
    assert torch.allclose(dW, expected, rtol=0, atol=1e-4 * expected.abs().max())
    # forward passes: the edited model's h_s moves by s_j A⁻¹R at every row's subject token
    w = ad.ffn_out_weight(model, LAYER)
    before = [block_outputs(model, tok, ad, t, st) for t, st in zip([*texts, kl_text], [*starts, 0])]
    with torch.no_grad():
        ad.add_to_ffn_out(model, LAYER, dW.to(w.dtype))
    try:
        after = [block_outputs(model, tok, ad, t, st) for t, st in zip([*texts, kl_text], [*starts, 0])]
    finally:
        with torch.no_grad():
            ad.add_to_ffn_out(model, LAYER, -dW.to(w.dtype))
    for j, (b, a) in enumerate(zip(before, after)):
        want = float(shares[j]) * (A_inv @ R)
        assert torch.allclose(a - b, want, rtol=0, atol=2e-3 * want.norm()), j
    assert res.info["diagnostics"][0]["share_bare"] == pytest.approx(float(shares[0]), rel=1e-5)


def block_outputs(model, tok, ad, text, start):
    from editors.locate.keys import read_at_subject

    return read_at_subject(model, tok, ad, LAYER, block_output, [text], [REQ.subject], [start])[0].double()


def test_captured_vstar_steps_give_the_eager_dike_edit(tiny, monkeypatch):
    """DiKE's v* through the graph-safe step (as on CUDA, where it is captured and replayed) writes the eager
    loop's update: its shift, computed from δ at every forward, must not be frozen at δ = 0."""
    from editors.locate import vstar

    model, tok, ad, path, _ = tiny
    k = bare_key(model, tok, ad)
    cfg = dict(krd_path=str(path), mom2_update_weight=3 * float(k @ k), v_num_grad_steps=8, v_lr=0.5)
    _, res, dW, _, nll = edit(model, tok, ad, cfg)
    monkeypatch.setattr(vstar.VStarConfig, "uses_captured_steps", lambda self, device: True)
    _, res_c, dW_c, _, nll_c = edit(model, tok, ad, cfg)
    assert float(dW.norm()) > 0 and float((dW_c - dW).norm()) <= 1e-4 * float(dW.norm())
    assert nll_c == pytest.approx(nll, abs=1e-4)
    d, d_c = res.info["diagnostics"][0], res_c.info["diagnostics"][0]
    assert d_c["vstar_steps"] == d["vstar_steps"] and d_c["vstar_nll"] == pytest.approx(d["vstar_nll"], abs=1e-5)
