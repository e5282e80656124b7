"""The v* memo: editors that solve the same v* problem share it, with bit-identical edits, and a changed model,
request or setting never reuses an entry."""
import json

import pytest
import torch

from common.cache import read_tensor_entry

from editors.adapters import adapter_for
from editors.alphaedit import AlphaEditEditor
from editors.base import EditRequest, PreservedFact
from editors.locate import vstar_cache
from editors.locate.vstar import VStarConfig, optimise_target_value
from editors.memit import MemitCEditor, MemitEditor
from editors.rome import RomeCEditor, RomeEditor
from test_locate_helpers import trained_tiny

HP = {"stats_corpus": "bundled", "stats_n_samples": 150, "stats_max_len": 32, "v_num_grad_steps": 8,
      "v_lr": 1.0, "v_weight_decay": 1e-3, "clamp_norm_factor": 100.0, "context_prefixes": [[4, 2]], "quiet": True}
REQ = EditRequest("a", "The capital of France is", "France", "Tokyo",
                  preserve=(PreservedFact("France is located in the continent of", "Europe"),))
CFG = VStarConfig(steps=6, lr=1.0, weight_decay=1e-3, kl_factor=0.0625, clamp_norm_factor=100.0, loss_threshold=0.05)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FINEKED_CACHE", str(tmp_path / "stats"))


def weight_changes(editor, model, tok, cache=None):
    """{param name: the change one apply() made}, the model restored afterwards."""
    editor.vstar_cache = cache
    result = editor.apply(model, tok, [REQ])
    after = {n: p.detach().clone() for n, p in model.named_parameters() if n in result.originals}
    changes = {n: after[n] - result.originals[n] for n in after}
    result.restore(model)
    return changes


def entries(folder):
    return sorted(folder.rglob("*.safetensors"))


@pytest.mark.parametrize("first,others,layers", [
    (MemitEditor, [AlphaEditEditor, MemitCEditor], [1, 2]),
    (RomeEditor, [RomeCEditor], [1]),
])
def test_editors_with_the_same_vstar_share_it_and_edit_identically(first, others, layers, tmp_path, monkeypatch):
    model, tok = trained_tiny("gpt2")
    hp = dict(HP, layers=layers)
    fresh = {cls.name: weight_changes(cls.from_config("tiny", hp), model, tok) for cls in [first, *others]}
    memo = tmp_path / "vstar"
    shared = {first.name: weight_changes(first.from_config("tiny", hp), model, tok, memo)}
    assert len(entries(memo)) == 1

    def refuse(*a, **k):
        raise AssertionError("optimised again although the memo holds this v*")
    monkeypatch.setattr(vstar_cache, "optimise_target_value", refuse)
    for cls in others:
        shared[cls.name] = weight_changes(cls.from_config("tiny", hp), model, tok, memo)
    assert len(entries(memo)) == 1
    for name, changes in fresh.items():
        assert changes.keys() == shared[name].keys() and changes
        for n in changes:
            assert torch.equal(changes[n], shared[name][n]), (name, n)
        assert max(c.abs().max().item() for c in changes.values()) > 0  # the edit did change the weights


def test_a_changed_weight_request_or_setting_is_optimised_afresh(tmp_path):
    model, tok = trained_tiny("llama")
    ad, memo, prefixes = adapter_for(model), tmp_path / "vstar", ["Yes. ", "Hi there. "]

    def memoised(req=REQ, cfg=CFG):
        return vstar_cache.target_value(model, tok, ad, 1, req, prefixes, cfg, "block_output", memo)

    def direct(req=REQ, cfg=CFG):
        return optimise_target_value(model, tok, ad, 1, req, prefixes, cfg, site="block_output")

    base = memoised()
    assert torch.equal(base.delta, direct().delta) and len(entries(memo)) == 1
    assert torch.equal(memoised().delta, base.delta) and len(entries(memo)) == 1  # a hit

    # one element of a layer the edit never touches, as a sequential edit elsewhere would change it
    w = ad.ffn_out_weight(model, 3)
    original = w.view(-1)[0].item()
    with torch.no_grad():
        w.view(-1)[0] += 1e-3
    changed = memoised()
    assert len(entries(memo)) == 2
    assert torch.equal(changed.delta, direct().delta) and not torch.equal(changed.delta, base.delta)
    with torch.no_grad():
        w.view(-1)[0] = original  # exactly: x + 1e-3 - 1e-3 need not round back to x in float32
    assert torch.equal(memoised().delta, base.delta) and len(entries(memo)) == 2  # the base entry again

    other = EditRequest("a", "The capital of France is", "France", "Rome")  # same case id, another o*
    assert torch.equal(memoised(req=other).delta, direct(req=other).delta) and len(entries(memo)) == 3
    longer = VStarConfig(**{**CFG.__dict__, "steps": 7})
    assert memoised(cfg=longer).steps == direct(cfg=longer).steps and len(entries(memo)) == 4


def test_an_unreadable_entry_is_optimised_again(tmp_path):
    model, tok = trained_tiny("gpt2")
    ad, memo = adapter_for(model), tmp_path / "vstar"
    base = vstar_cache.target_value(model, tok, ad, 1, REQ, [], CFG, "ffn_output", memo)
    entry, = entries(memo)
    entry.write_bytes(entry.read_bytes()[:40])  # torn by a kill
    again = vstar_cache.target_value(model, tok, ad, 1, REQ, [], CFG, "ffn_output", memo)
    assert torch.equal(again.delta, base.delta)
    assert torch.equal(read_tensor_entry(entry)["delta"], base.delta)  # rewritten whole


def test_fineked_run_vstar_cache_gives_the_uncached_results(tmp_path, monkeypatch):
    from harness.cli import main
    from test_runner import write_records

    data = str(write_records(tmp_path / "cases.jsonl"))
    sets = ["--set", "stats_n_samples=100", "--set", "stats_max_len=32", "--set", "v_num_grad_steps=5",
            "--set", "layers=[1,2]", "--set", "context_prefixes=[[4,2]]"]

    def run(editor, out, *extra):
        assert main(["run", "--editor", editor, "--model", "tiny:gpt2", "--dataset", data, "--limit", "2",
                     "--out", str(tmp_path / out), "--quiet", *sets, *extra]) == 0
        return [(ln["case_id"], ln["metrics"]) for ln in
                map(json.loads, (tmp_path / out / "results.jsonl").read_text().splitlines())]

    plain = run("alphaedit", "plain")
    memo = ["--vstar-cache", str(tmp_path / "vstar")]
    run("memit", "memit", *memo)
    assert len(entries(tmp_path / "vstar")) == 2  # one z per case

    def refuse(*a, **k):
        raise AssertionError("optimised again although the memo holds this z")
    monkeypatch.setattr(vstar_cache, "optimise_target_value", refuse)
    assert run("alphaedit", "shared", *memo) == plain  # both z from the memo, the same metrics


def test_every_field_of_the_key_matters(monkeypatch):
    import copy
    from dataclasses import replace

    model, tok = trained_tiny("gpt2")
    digest = vstar_cache.model_state_digest(model)
    args = dict(digest=digest, tok=tok, layer=1, site="block_output", cfg=CFG, device="cpu", request=REQ,
                prefixes=["Yes. "], variant=None)
    base = vstar_cache.vstar_key(**args)
    assert vstar_cache.vstar_key(**args) == base  # deterministic
    longer_tok = copy.deepcopy(tok)
    longer_tok.add_tokens(["<new-token>"])
    changed = {
        "digest": "0" * 64, "tok": longer_tok, "layer": 2, "site": "ffn_output", "cfg": replace(CFG, kl_factor=0.1),
        "request": EditRequest("a", "The capital of France is", "France", "Rome"), "prefixes": ["No. "],
        "variant": {"krd": "x"},
    }
    for field, value in changed.items():
        assert vstar_cache.vstar_key(**{**args, field: value}) != base, field
    for request in (EditRequest("a", "The capital of Spain is", "Spain", "Tokyo"),
                    EditRequest("a", "The capital of France is", "capital", "Tokyo")):
        assert vstar_cache.vstar_key(**{**args, "request": request}) != base
    assert vstar_cache.vstar_key(**{**args, "cfg": replace(CFG, cache_prefixes=False)}) != base
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)  # another reduction order
        assert vstar_cache.vstar_key(**args) != base
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setattr(vstar_cache, "code_digest", lambda: "edited code")
    assert vstar_cache.vstar_key(**args) != base
    # the model's digest covers its config as well as its weights
    model.config.layer_norm_epsilon *= 2
    assert vstar_cache.model_state_digest(model) != digest
