"""KRD premise metrics, L_con and the prefix-state cache, each against an independent computation on tiny models.

The independent side runs one unpadded sequence at a time and substitutes with its own forward hook, so it shares
no code with editors.dike.states / train / diagnostics beyond the model itself.
"""
import copy
import statistics

import pytest
import torch
import torch.nn.functional as F

from editors.adapters import adapter_for
from editors.dike.diagnostics import premise_metrics, silhouette
from editors.dike.krd import KRD, KRDConfig, contrastive_loss
from editors.dike.states import PrefixCache, subject_and_relation_states, substituted_nll, suffix_nll, target_batch
from editors.dike.train import KRDSample, KRDTrainConfig, batch_step
from editors.tiny import tiny_model_and_tokenizer

SAMPLES = [
    KRDSample("The capital of France is", "France", "Paris",
              (("France is located in the continent of", "Europe"), ("The official religion of France is", "Christianity"))),
    KRDSample("Tokyo is located in", "Tokyo", "Japan", (("The capital of Tokyo is", "Asia"),)),
    KRDSample("Danielle Darrieux speaks", "Danielle Darrieux", "French",
              (("Danielle Darrieux was born in the city of", "Paris"), ("Danielle Darrieux plays the", "piano"),
               ("The mother tongue of Danielle Darrieux is", "French"))),
    KRDSample("The capital of Germany is", "Germany", "Berlin", (("Germany is a member of", "Europe"),)),
]


def sharp_model(family):
    """A tiny model with its weight matrices scaled by 10: at the default init (std 0.02) its outputs are nearly
    uniform, so a substituted state moves the NLL by < 0.01 and wrong rows or blocks would go unnoticed."""
    model, tok = tiny_model_and_tokenizer(family)
    model = copy.deepcopy(model)  # tiny_model_and_tokenizer is cached: leave the shared one alone
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(10)
    return model, tok


def nll_by_hand(model, tok, ad, layer, prompt, subject, target, vec=None):
    """Mean NLL of target after prompt, one unpadded sequence, with the state after block `layer` at the subject's
    last token replaced by vec (None: clean)."""
    full = tok(prompt + " " + target, return_tensors="pt").input_ids
    n_p = len(tok(prompt).input_ids)
    end = prompt.index(subject) + len(subject)
    pos = len(tok(prompt[:end]).input_ids) - 1

    def swap(mod, args, out):
        h = (out[0] if isinstance(out, tuple) else out).clone()
        h[0, pos] = vec
        return (h, *out[1:]) if isinstance(out, tuple) else h

    handle = ad.get(model, ad.block_path(layer)).register_forward_hook(swap) if vec is not None else None
    try:
        logp = model(input_ids=full).logits[0, :-1].log_softmax(-1)
    finally:
        if handle is not None:
            handle.remove()
    return -logp[n_p - 1:].gather(-1, full[0, n_p:, None]).mean()


def states(model, tok, ad, samples, layer=1, repr_layer=2):
    return subject_and_relation_states(model, tok, ad, layer, repr_layer, [s.prompt for s in samples],
                                       [s.subject for s in samples])


@pytest.mark.parametrize("family", ["gpt2", "gptj", "llama"])
@pytest.mark.parametrize("layer", [1, 3])
def test_suffix_pass_on_cached_states_equals_the_full_pass(family, layer):
    model, tok = sharp_model(family)
    ad = adapter_for(model)
    rows = [(s.prompt, s.subject, s.target) for s in SAMPLES] + [(p, s.subject, t) for s in SAMPLES for p, t in s.siblings]
    torch.manual_seed(0)
    vec = torch.randn(len(rows), 64)
    tb = target_batch(tok, *zip(*rows))
    cache = PrefixCache(model, ad, layer)
    with torch.no_grad():
        for v in (vec, None):
            assert torch.allclose(suffix_nll(model, ad, layer, tb, cache.states(tb), v),
                                  substituted_nll(model, ad, layer, tb, v), atol=1e-5)
        # the same rows in another chunk (other padding) come from the cache, not a new prefix pass
        part = target_batch(tok, *zip(*rows[2:5]))
        assert torch.allclose(suffix_nll(model, ad, layer, part, cache.states(part), vec[2:5]),
                              substituted_nll(model, ad, layer, part, vec[2:5]), atol=1e-5)
    assert cache.computed == len(rows)


def test_the_suffix_pass_skips_the_blocks_up_to_l():
    model, tok = sharp_model("llama")
    ad = adapter_for(model)
    ran = []
    handles = [ad.get(model, ad.block_path(i)).register_forward_hook(lambda m, a, o, i=i: ran.append(i))
               for i in range(ad.n_layers(model))]
    tb = target_batch(tok, [SAMPLES[0].prompt], [SAMPLES[0].subject], [SAMPLES[0].target])
    cache = PrefixCache(model, ad, 1)
    st = cache.states(tb)
    ran.clear()
    with torch.no_grad():
        suffix_nll(model, ad, 1, tb, st, None)
    for h in handles:
        h.remove()
    assert ran == [2, 3]
    assert len(model.get_submodule(ad.blocks)) == 4  # restored


def independent_loss(model, tok, ad, krd, cfg, samples, h_s, h_r):
    """ctr + α (mean NLL(o | z_r) + mean NLL(o' | z_u)) + β ‖h_s − ĥ_s‖², with every sibling, one row at a time."""
    z_r, z_u, h_hat = krd(h_s, h_r)
    nll_r = torch.stack([nll_by_hand(model, tok, ad, cfg.layer, s.prompt, s.subject, s.target, z_r[i])
                         for i, s in enumerate(samples)])
    nll_u = torch.stack([nll_by_hand(model, tok, ad, cfg.layer, p, s.subject, t, z_u[i])
                         for i, s in enumerate(samples) for p, t in s.siblings])
    rec = ((h_s - h_hat) ** 2).sum(1).mean()
    ctr = contrastive_loss(z_r, z_u, h_s, cfg.tau)
    return ctr + cfg.alpha * (nll_r.mean() + nll_u.mean()) + cfg.beta * rec, nll_r.mean(), nll_u.mean()


@pytest.mark.parametrize("cache", [True, False])
def test_constraint_loss_and_its_gradient_match_an_independent_computation(cache):
    """Catches z_r and z_u swapped in L_con (the values differ) and L_con cut off from the KRD's graph (the
    gradients differ); con_per_batch=m must equal the same loss on the first m samples alone."""
    model, tok = sharp_model("llama")
    ad = adapter_for(model)
    h_s, h_r = states(model, tok, ad, SAMPLES)
    cfg = KRDTrainConfig(layer=1, repr_layer=2, siblings=10, alpha=2.0, beta=0.01, llm_batch=3)
    for m in (len(SAMPLES), 2):
        torch.manual_seed(0)
        krd = KRD(KRDConfig(d=64)).double().float()  # same init for both sides
        prefix = PrefixCache(model, ad, 1) if cache else None
        c = KRDTrainConfig(**{**cfg.__dict__, "con_per_batch": m if m < len(SAMPLES) else 0})
        krd.zero_grad()
        got = batch_step(model, tok, ad, krd, c, SAMPLES, h_s, h_r, train=True, prefix=prefix)
        got_grads = [p.grad.clone() for p in krd.parameters()]
        krd.zero_grad()
        # independent: L_ctr and L_rec on the whole batch, L_con on its first m samples
        z_r, z_u, h_hat = krd(h_s, h_r)
        _, nll_r, nll_u = independent_loss(model, tok, ad, krd, cfg, SAMPLES[:m], h_s[:m], h_r[:m])
        total = (contrastive_loss(z_r, z_u, h_s, cfg.tau) + cfg.beta * ((h_s - h_hat) ** 2).sum(1).mean()
                 + cfg.alpha * (nll_r + nll_u))
        total.backward()
        assert abs(got.con_r - nll_r.item()) < 1e-4 and abs(got.con_u - nll_u.item()) < 1e-4
        assert abs(got.total - total.item()) < 1e-3
        for g, p in zip(got_grads, krd.parameters()):
            assert torch.allclose(g, p.grad, rtol=1e-3, atol=1e-6), (m, (g - p.grad).abs().max())


def test_premise_metrics_on_a_hand_built_krd():
    """W1 = I, W3 = −I, W5 = c I, W6 = −c I (no h_r terms): z_r = GELU(h_s), z_u = GELU(−h_s) and, as
    GELU(x) − GELU(−x) = x, ĥ_s = c h_s: the reconstruction error is exactly |1 − c|; the NLLs are checked
    against single-sequence passes with those vectors substituted by hand."""
    model, tok = sharp_model("gpt2")
    ad = adapter_for(model)
    h_s, h_r = states(model, tok, ad, SAMPLES)
    eye, zero = torch.eye(64), torch.zeros(64, 64)
    with torch.no_grad():
        by_hand, rows = {}, {}
        for comp, vecs in (("h_s", [None] * 4), ("z_r", F.gelu(h_s)), ("z_u", F.gelu(-h_s))):
            rows[("o", comp)] = [nll_by_hand(model, tok, ad, 1, s.prompt, s.subject, s.target, vecs[i]).item()
                                 for i, s in enumerate(SAMPLES)]
            rows[("o'", comp)] = [nll_by_hand(model, tok, ad, 1, p, s.subject, t, vecs[i]).item()
                                  for i, s in enumerate(SAMPLES) for p, t in s.siblings]
            by_hand[("o", comp)] = statistics.median(rows[("o", comp)])
            by_hand[("o'", comp)] = statistics.median(rows[("o'", comp)])
    # the split: per row, crossed minus routed NLL
    split_o = [u - r for r, u in zip(rows[("o", "z_r")], rows[("o", "z_u")])]
    split_o_prime = [r - u for r, u in zip(rows[("o'", "z_r")], rows[("o'", "z_u")])]
    assert abs(by_hand[("o", "z_r")] - by_hand[("o", "z_u")]) > 0.05  # the model can tell the components apart
    for c, recon_ok, prefix in ((1.0, True, None), (0.6, False, PrefixCache(model, ad, 1))):
        krd = KRD(KRDConfig(d=64))
        with torch.no_grad():
            for name, w in (("W1", eye), ("W2", zero), ("W3", -eye), ("W4", zero), ("W5", c * eye), ("W6", -c * eye)):
                getattr(krd, name).weight.copy_(w)
        m = premise_metrics(model, tok, ad, krd, 1, SAMPLES, h_s, h_r, siblings=10, llm_batch=4, prefix=prefix)
        assert abs(m["recon_rel"] - abs(1 - c)) < 1e-5
        assert m["meets"]["recon_rel"] is recon_ok
        for comp in ("h_s", "z_r", "z_u"):
            assert abs(m["nll_o"][comp] - by_hand[("o", comp)]) < 1e-4, comp
            assert abs(m["nll_o_prime"][comp] - by_hand[("o'", comp)]) < 1e-4, comp
        assert abs(m["gap_o_z_r"] - (by_hand[("o", "z_r")] - by_hand[("o", "h_s")])) < 1e-4
        assert abs(m["gap_o_prime_z_u"] - (by_hand[("o'", "z_u")] - by_hand[("o'", "h_s")])) < 1e-4
        assert m["meets"]["gap_o_z_r"] == (m["gap_o_z_r"] <= 0.5)
        assert m["n_samples"] == 4 and m["n_o_prime_rows"] == 7
        assert abs(m["silhouette"] - silhouette(krd, h_s, h_r)) < 1e-12
        for key, diffs in (("split_o", split_o), ("split_o_prime", split_o_prime)):
            assert abs(m[key]["median"] - statistics.median(diffs)) < 1e-4, key
            assert m[key]["share_positive"] == sum(d > 0 for d in diffs) / len(diffs), key
        # W3 = −I: (W3ᵀW3 + I)⁻¹ = I / 2, the same share of every direction
        assert all(abs(m["fik_keep"][k] - 0.5) < 1e-12 for k in ("min", "median", "max"))
        assert m["premise_met"] == all(m["meets"].values())


def test_fik_keep_spectrum_is_the_share_written_along_each_direction():
    """For W3 = Q diag(σ) Qᵀ, (μ W3ᵀW3 + I)⁻¹ keeps 1 / (1 + μ σ²) of a residual along each column of Q."""
    from editors.dike.diagnostics import fik_keep_spectrum

    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))
    sigma = torch.linspace(0.0, 3.0, 16, dtype=torch.float64)
    krd = KRD(KRDConfig(d=16))
    with torch.no_grad():
        krd.W3.weight.copy_(q @ torch.diag(sigma) @ q.T)
    for mu in (0.3, 1.0, 3.0):
        keep = 1.0 / (1.0 + mu * sigma ** 2)
        got = fik_keep_spectrum(krd, mu)
        assert abs(got["max"] - 1.0) < 1e-5 and abs(got["min"] - keep.min().item()) < 1e-5
        assert abs(got["median"] - keep.median().item()) < 1e-5
