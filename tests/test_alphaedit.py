"""AlphaEdit's state: accumulated keys live on the instance, leave with restore(), and clear with reset()."""
import torch

from editors.adapters import adapter_for
from editors.alphaedit import AlphaEditEditor
from editors.base import EditRequest
from test_locate_helpers import trained_tiny

HP = {"stats_corpus": "bundled", "stats_n_samples": 150, "stats_max_len": 32, "v_num_grad_steps": 10,
      "v_lr": 1.0, "v_weight_decay": 1e-3, "clamp_norm_factor": 100.0, "context_prefixes": [[4, 2]], "quiet": True,
      "nullspace_threshold": 1e9, "layers": [1, 2]}  # P = I: isolate the accumulated-keys term
A = EditRequest("a", "The capital of France is", "France", "Tokyo")
B = EditRequest("b", "Berlin is located in the continent of", "Berlin", "Asia")


def test_sequential_keys_accumulate_restore_and_reset(tmp_path, monkeypatch):
    monkeypatch.setenv("FINEKED_CACHE", str(tmp_path))
    model, tok = trained_tiny("gpt2")
    ed = AlphaEditEditor.from_config("tiny", HP)
    other = AlphaEditEditor.from_config("tiny", HP)
    ra = ed.apply(model, tok, [A])
    assert {l: k.shape[1] for l, k in ed.prev_keys.items()} == {1: 1, 2: 1}
    assert other.prev_keys == {}  # state is per instance, not global
    rb = ed.apply(model, tok, [B])
    assert ed.prev_keys[1].shape[1] == 2
    rb.restore(model)
    assert ed.prev_keys[1].shape[1] == 1
    ed.reset()
    assert ed.prev_keys == {}
    ra.restore(model)


def test_earlier_edit_keys_are_protected_in_sequential_editing(tmp_path, monkeypatch):
    monkeypatch.setenv("FINEKED_CACHE", str(tmp_path))
    model, tok = trained_tiny("llama")
    ad = adapter_for(model)
    hp = dict(HP, layers=[1], L2=1e-3)
    seq = AlphaEditEditor.from_config("tiny", hp)
    ra = seq.apply(model, tok, [A])
    k_a = seq.prev_keys[1][:, 0]
    w1 = ad.ffn_out_weight(model, 1).detach().clone()

    def change_on_a(editor):
        r = editor.apply(model, tok, [B])
        d = ad.weight_as_out_in(ad.ffn_out_weight(model, 1).detach() - w1).double()
        r.restore(model)
        return (d @ k_a).norm().item()

    fresh = AlphaEditEditor.from_config("tiny", hp)  # knows nothing of edit A
    protected, unprotected = change_on_a(seq), change_on_a(fresh)
    assert unprotected > 1e-2 and protected < 0.1 * unprotected, (protected, unprotected)
    ra.restore(model)
