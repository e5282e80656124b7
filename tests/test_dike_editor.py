"""The dike editor on the three tiny families: it edits, restores bit-exactly, and its flags mean what they say."""
import pytest
import torch

from editors.adapters import adapter_for
from editors.base import EditRequest, parameter_digests
from editors.dike.states import subject_and_relation_states
from editors.dike.checkpoint import KRDCheckpointError, save_krd
from editors.dike.train import KRDTrainConfig, train_krd
from editors.locate.fingerprint import model_fingerprint
from editors.registry import make_editor
from editors.tiny import tiny_model_and_tokenizer
from tests.test_krd_training import tiny_samples

LAYER, REPR = 1, 2
FAST = dict(layers=[LAYER], repr_layer=REPR, stats_corpus="identity", context_prefixes=[[3, 2]],
            v_num_grad_steps=8, mom2_update_weight=1.0, quiet=True)
REQUESTS = [EditRequest("c1", "The capital of France is", "France", "Berlin", "Paris"),
            EditRequest("c2", "France is located in the continent of", "France", "Asia", "Europe")]


@pytest.fixture(scope="module", params=["gpt2", "gptj", "llama"])
def tiny(request, tmp_path_factory):
    model, tok = tiny_model_and_tokenizer(request.param)
    ad = adapter_for(model)
    res = train_krd(model, tok, ad, tiny_samples(), KRDTrainConfig(layer=LAYER, repr_layer=REPR, epochs=1,
                                                                    batch_size=8), quiet=True)
    path = tmp_path_factory.mktemp(f"krd-{request.param}")
    save_krd(path, res.krd, {"model_fingerprint": model_fingerprint(model), "layer": LAYER, "repr_layer": REPR})
    return model, tok, ad, path


def test_dike_edits_and_restores_bit_exactly(tiny):
    model, tok, ad, path = tiny
    names = [n for n, _ in model.named_parameters()]
    before = parameter_digests(model, names)
    editor = make_editor("dike", "tiny", {**FAST, "krd_path": str(path)})
    result = editor.apply(model, tok, REQUESTS)
    after = parameter_digests(model, names)
    changed = [n for n in names if before[n] != after[n]]
    assert changed == [ad.ffn_out_weight_name(LAYER)]
    result.restore(model)
    assert parameter_digests(model, names) == before


def _h_s(model, tok, ad, req):
    return subject_and_relation_states(model, tok, ad, LAYER, REPR, [req.prompt], [req.subject])[0][0].double()


def test_flags_change_the_update_and_no_tke_no_fik_is_memit(tiny):
    model, tok, ad, path = tiny
    w = ad.ffn_out_weight(model, LAYER)

    def delta(spec, **extra):
        ed = make_editor(spec, "tiny", {**FAST, "krd_path": str(path), **extra})
        w0 = w.detach().clone()
        res = ed.apply(model, tok, REQUESTS[:1])
        d = (w.detach() - w0).clone()
        res.restore(model)
        assert torch.equal(w, w0)
        return d

    full, no_fik, no_tke = delta("dike"), delta("dike[no_fik]"), delta("dike[no_tke]")
    plain = delta("dike[no_tke,no_fik]", through_shrink=False)
    assert not torch.allclose(full, no_fik) and not torch.allclose(full, no_tke)
    assert not torch.allclose(delta("dike[no_tke,no_fik]"), plain)  # through the shrink, v* is not MEMIT's
    memit = make_editor("memit", "tiny", {k: v for k, v in FAST.items() if k != "repr_layer"})
    w0 = w.detach().clone()
    res = memit.apply(model, tok, REQUESTS[:1])
    assert torch.allclose(w.detach() - w0, plain, atol=1e-6)
    res.restore(model)


def test_missing_krd_names_the_command(tiny, tmp_path):
    model, tok, _, _ = tiny
    ed = make_editor("dike[no_kc]", "tiny", {**FAST, "krd_path": str(tmp_path / "none")})
    with pytest.raises(KRDCheckpointError, match="fineked train-krd --model .* --no-kc"):
        ed.apply(model, tok, REQUESTS[:1])


def test_unknown_clamp_on_is_refused_when_the_hparams_are_built():
    from editors.hparams import HparamsError

    with pytest.raises(HparamsError, match="clamp_on must be one of 'z_r', 'h_s'"):
        make_editor("dike", "tiny", {"clamp_on": "W5"})
    with pytest.raises(HparamsError, match="kl_reference must be one of"):
        make_editor("dike", "tiny", {"kl_reference": "edited"})
    assert make_editor("dike", "tiny", {"clamp_on": "h_s"}).hparams.clamp_on == "h_s"


def test_dike_and_no_fik_share_the_vstar_memo_and_another_krd_misses(tiny, tmp_path, monkeypatch):
    # without the shrink, dike and dike[no_fik] optimise the same v* (through it, A⁻¹ differs and so does v*)
    FAST_SHARED = {**FAST, "through_shrink": False}
    import copy

    from editors.locate import vstar_cache

    model, tok, ad, path = tiny
    memo = tmp_path / "vstar"

    def changes(spec, krd_path, cache=None):
        ed = make_editor(spec, "tiny", {**FAST_SHARED, "krd_path": str(krd_path)})
        ed.vstar_cache = cache
        result = ed.apply(model, tok, REQUESTS)
        w = ad.ffn_out_weight(model, LAYER).detach().clone()
        result.restore(model)
        return w - ad.ffn_out_weight(model, LAYER).detach()

    fresh = {spec: changes(spec, path) for spec in ("dike", "dike[no_fik]")}
    assert torch.equal(changes("dike", path, memo), fresh["dike"])
    assert len(list(memo.rglob("*.safetensors"))) == 2  # one z_r optimisation per request
    real = vstar_cache.optimise_target_value

    def refuse(*a, **k):
        raise AssertionError("optimised again although the memo holds this v*")
    monkeypatch.setattr(vstar_cache, "optimise_target_value", refuse)
    monkeypatch.setattr("editors.dike.editor.optimise_target_value", refuse)
    assert torch.equal(changes("dike[no_fik]", path, memo), fresh["dike[no_fik]"])
    assert not torch.equal(fresh["dike[no_fik]"], fresh["dike"])

    # a KRD with one changed weight is another problem: optimised afresh, into new entries
    monkeypatch.setattr("editors.dike.editor.optimise_target_value", real)
    krd = copy.deepcopy(make_editor("dike", "tiny", {**FAST, "krd_path": str(path)}).load_krd(model, LAYER, REPR).krd)
    with torch.no_grad():
        krd.W3.weight.view(-1)[0] += 1e-2
    other = tmp_path / "krd-other"
    save_krd(other, krd, {"model_fingerprint": model_fingerprint(model), "layer": LAYER, "repr_layer": REPR})
    plain = changes("dike", other)
    assert torch.equal(changes("dike", other, memo), plain)
    assert len(list(memo.rglob("*.safetensors"))) == 4


def test_a_mismatched_krd_is_refused_before_the_second_moments(tiny, monkeypatch):
    """A KRD for another layer (or a missing one) fails at once, not after minutes of covariance statistics."""
    model, tok, _, path = tiny

    def no_stats(*a, **k):
        raise AssertionError("second moments computed before the KRD was checked")
    monkeypatch.setattr("editors.locate.editor.layer_second_moments", no_stats)
    req = [EditRequest("c", "The capital of France is", "France", "Rome")]
    for overrides, error in (({"layers": [LAYER + 1], "krd_path": str(path)}, "not"),
                             ({"krd_path": str(path / "missing")}, "train-krd"),
                             ({"layers": [0, LAYER], "krd_path": str(path)}, "one layer")):
        with pytest.raises((KRDCheckpointError, ValueError), match=error):
            make_editor("dike", "tiny", {**FAST, **overrides}).apply(model, tok, req)
