"""KRD plumbing on the tiny models: substitution hooks, the constraint NLL, training, checkpoints."""
import json

import pytest
import torch

from editors.adapters import adapter_for
from editors.dike.checkpoint import KRDCheckpointError, load_krd, save_krd
from editors.dike.states import subject_and_relation_states, substituted_nll, target_batch
from editors.dike.train import KRDSample, KRDTrainConfig, split_by_subject, train_krd
from editors.locate.fingerprint import model_fingerprint
from editors.locate.hooks import block_output
from editors.tiny import tiny_model_and_tokenizer

PROMPTS = [("The capital of France is", "France", "Paris"), ("Danielle Darrieux speaks", "Danielle Darrieux", "French"),
           ("The capital of Germany is", "Germany", "Berlin"), ("Tokyo is located in", "Tokyo", "Japan")]


def tiny_samples() -> list[KRDSample]:
    subjects = ["France", "Germany", "Italy", "Spain", "England", "Japan", "Canada", "Paris"]
    objs = ["Paris", "Berlin", "Rome", "Madrid", "London", "Tokyo", "Ottawa", "Europe"]
    out = []
    for i, s in enumerate(subjects):
        sib = ((f"{s} is located in the continent of", "Europe" if i % 2 else "Asia"),
               (f"The official religion of {s} is", "Islam" if i % 3 else "Christianity"))
        out.append(KRDSample(f"The capital of {s} is", s, objs[i], sib))
        out.append(KRDSample(f"{s} was founded by", s, objs[(i + 1) % 8], sib))
    return out


@pytest.mark.parametrize("family", ["gpt2", "gptj", "llama"])
def test_substitution_changes_exactly_one_position(family):
    model, tok = tiny_model_and_tokenizer(family)
    ad = adapter_for(model)
    enc = tok(["The capital of France is Paris"], return_tensors="pt")

    def run(substitute: bool):
        seen = {}
        def capture(layer):
            return lambda m, a, out: seen.__setitem__(layer, (out[0] if isinstance(out, tuple) else out).clone())
        with torch.no_grad():
            if substitute:
                with block_output(model, ad, 1, [3], replace=torch.full((1, 64), 3.0)):
                    handles = [ad.get(model, ad.block_path(l)).register_forward_hook(capture(l)) for l in (1, 2)]
                    model(**enc)
            else:
                handles = [ad.get(model, ad.block_path(l)).register_forward_hook(capture(l)) for l in (1, 2)]
                model(**enc)
        for h in handles:
            h.remove()
        return seen

    base, sub = run(False), run(True)
    changed = (base[1] != sub[1]).any(-1)[0]  # residual stream after block 1
    assert changed.tolist() == [j == 3 for j in range(changed.numel())]
    assert torch.equal(sub[1][0, 3], torch.full((64,), 3.0))
    later = (base[2] != sub[2]).any(-1)[0]  # causal: the next block sees it only from position 3 on
    assert not later[:3].any() and later[3:].all()


@pytest.mark.parametrize("family", ["gpt2", "gptj", "llama"])
def test_substituting_h_s_by_itself_gives_the_plain_target_nll(family):
    model, tok = tiny_model_and_tokenizer(family)
    ad = adapter_for(model)
    prompts, subjects, targets = zip(*PROMPTS)
    h_s, _ = subject_and_relation_states(model, tok, ad, 1, 2, prompts, subjects)
    tb = target_batch(tok, prompts, subjects, targets)
    got = substituted_nll(model, ad, 1, tb, h_s)
    for i, (p, s, t) in enumerate(PROMPTS):  # independent: one unpadded sequence at a time
        full = tok(p + " " + t, return_tensors="pt").input_ids
        n_p = len(tok(p).input_ids)
        with torch.no_grad():
            logp = model(input_ids=full).logits[0, :-1].log_softmax(-1)
        want = -logp[n_p - 1:].gather(-1, full[0, n_p:, None]).mean()
        assert abs(got[i].item() - want.item()) < 1e-4, (family, p)


def test_split_keeps_subjects_disjoint():
    samples = tiny_samples()
    tr, va = split_by_subject(samples, 0.25, 0)
    assert va and tr and not {samples[i].subject for i in tr} & {samples[i].subject for i in va}


def test_siblings_bounds():
    with pytest.raises(ValueError, match="1-10"):
        KRDTrainConfig(layer=1, repr_layer=2, siblings=11)


@pytest.mark.parametrize("family", ["llama"])
def test_training_lowers_the_loss_and_checkpoints_round_trip(family, tmp_path):
    model, tok = tiny_model_and_tokenizer(family)
    ad = adapter_for(model)
    cfg = KRDTrainConfig(layer=1, repr_layer=2, epochs=6, batch_size=6, lr=3e-3, siblings=2, val_fraction=0.25,
                         patience=10, beta=0.01)
    res = train_krd(model, tok, ad, tiny_samples(), cfg, quiet=True)
    steps = res.history["steps"]
    first, last = steps[0], steps[-1]
    assert last["total"] < first["total"]
    assert len(res.history["epochs"]) == 6 and res.best_val < float("inf")
    fp = model_fingerprint(model)
    save_krd(tmp_path / "ck", res.krd, {"model_fingerprint": fp, "layer": 1, "repr_layer": 2})
    loaded = load_krd(tmp_path / "ck", fp, 1, 2)
    for k, v in res.krd.state_dict().items():
        assert torch.equal(loaded.krd.state_dict()[k], v)
    with pytest.raises(KRDCheckpointError, match="trained for model"):
        load_krd(tmp_path / "ck", "other-model-123", 1, 2)
    with pytest.raises(KRDCheckpointError, match="layer=1, not 2"):
        load_krd(tmp_path / "ck", fp, 2, 2)
    with pytest.raises(KRDCheckpointError, match="train-krd"):
        load_krd(tmp_path / "missing", fp, 1, 2)
    assert json.loads((tmp_path / "ck" / "krd.json").read_text())["krd"]["d"] == 64
