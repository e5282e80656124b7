"""The v* memo: editors that solve the same v* problem share it, with bit-identical edits, and a changed model,
request or setting never reuses an entry."""
import json

import pytest
import torch

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
CFG = VStarConfig(steps=6, lr=1.0, weight_decay=1e-3, clamp_norm_factor=100.0)


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
    return sorted(folder.rglob("*.pt"))


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
    with torch.no_grad():
        w.view(-1)[0] += 1e-3
    changed = memoised()
    assert len(entries(memo)) == 2
    assert torch.equal(changed.delta, direct().delta) and not torch.equal(changed.delta, base.delta)
    with torch.no_grad():
        w.view(-1)[0] -= 1e-3
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
    assert torch.equal(torch.load(entry, weights_only=True)["delta"], base.delta)  # rewritten whole


def test_fineked_run_vstar_cache_gives_the_uncached_results(tmp_path):
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
    assert run("alphaedit", "shared", *memo) == plain
    assert len(entries(tmp_path / "vstar")) == 2  # alphaedit found both
