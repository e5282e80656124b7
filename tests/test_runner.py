"""The runner on tiny models: resume after a kill, config refusal, determinism, batching modes, sequential."""
import json
from pathlib import Path

import pytest
import torch

from common.cache import read_tensor_entry
from editors.base import parameter_digests
from editors.tiny import tiny_model_and_tokenizer
from harness import evaluate, runner
from harness.datasets import load_dataset
from harness.errors import UserError
from harness.runner import Run, RunConfig, edit_request, plan_batches, skip_relations

CASES = [  # (case id, subject, relation, prompt, true, new)
    ("c1", "Danielle Darrieux", "P103", "The mother tongue of Danielle Darrieux is", "French", "English"),
    ("c2", "Danielle Darrieux", "P27", "Danielle Darrieux is a citizen of", "France", "Japan"),
    ("c3", "Berlin", "P17", "Berlin is located in the country of", "Germany", "Italy"),
    ("c4", "Tokyo", "P30", "Tokyo is located in the continent of", "Asia", "Europe"),
    ("c5", "Berlin", "P1376", "Berlin is the capital of", "Germany", "Spain"),
]
FACTS = {
    "Danielle Darrieux": [("P103", "The mother tongue of Danielle Darrieux is", "French", "hard"),
                          ("P27", "Danielle Darrieux is a citizen of", "France", "easy"),
                          ("P19", "Danielle Darrieux was born in", "Paris", "middle")],
    "Berlin": [("P17", "Berlin is located in the country of", "Germany", "hard"),
               ("P1376", "Berlin is the capital of", "Germany", "middle"),
               ("P30", "Berlin is located in the continent of", "Europe", "easy")],
    "Tokyo": [("P17", "Tokyo is located in the country of", "Japan", "easy")],
}


LANG = {"Danielle Darrieux": "French", "Berlin": "German", "Tokyo": "Japanese"}


def write_records(path: Path) -> Path:
    lines = []
    for cid, subj, rel, prompt, true, new in CASES:
        lines.append(json.dumps({
            "case_id": cid, "subject": subj, "subject_id": None, "relation_id": rel, "prompt": prompt,
            "target_true": {"str": true}, "target_new": {"str": new},
            "paraphrase_prompts": [f"In fact, {prompt[0].lower()}{prompt[1:]}"],
            "neighborhood_prompts": ["The capital of France is", "London is located in the city of"],
            "fine_grained": [{"relation_id": r, "prompt": p, "target": {"str": t}, "similarity": 0.5, "level": lv}
                             for r, p, t, lv in FACTS[subj] if r != rel],
            "constraint_facts": [{"relation_id": "P1412", "prompt": f"{subj} speaks", "target": {"str": LANG[subj]}}],
        }))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FINEKED_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def data(tmp_path):
    return load_dataset(str(write_records(tmp_path / "cases.jsonl")))


def make_run(data, out, editor="ft", family="gpt2", **cfg):
    model, tok = tiny_model_and_tokenizer(family)
    if editor == "ft":
        cfg.setdefault("overrides", {"lr": 0.05, "norm_constraint": 0.05, "steps": 5})
    return Run(RunConfig(model=f"tiny:{family}", editor=editor, **cfg), data, model, tok, out, "tiny", quiet=True,
               check_restore=True)


def results(out):
    return [(ln["case_id"], ln["metrics"]) for ln in map(json.loads, (out / "results.jsonl").read_text().splitlines())]


def test_resume_after_kill_gives_identical_results(data, tmp_path, monkeypatch):
    make_run(data, tmp_path / "a").execute()
    whole = results(tmp_path / "a")
    assert [c for c, _ in whole] == [c[0] for c in CASES]

    real, calls = evaluate.evaluate_cases, []

    def dies_on_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(runner, "evaluate_cases", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        make_run(data, tmp_path / "b").execute()
    with (tmp_path / "b" / "results.jsonl").open("a") as fh:
        fh.write('{"case_id": "c3", "metr')  # torn write at the moment of the kill
    monkeypatch.setattr(runner, "evaluate_cases", real)
    make_run(data, tmp_path / "b").execute()
    assert results(tmp_path / "b") == whole  # nothing lost, nothing duplicated, same numbers


def test_limit_then_resume_extends_the_run(data, tmp_path):
    run = make_run(data, tmp_path / "r", editor="unedited")
    run.limit, run.command = 2, "fineked run --limit 2"
    run.execute()
    assert len(results(tmp_path / "r")) == 2
    run = make_run(data, tmp_path / "r", editor="unedited")
    run.command = "fineked run --limit 5"
    run.execute()
    assert [c for c, _ in results(tmp_path / "r")] == [c[0] for c in CASES]
    # the manifest names the command that produced the whole result set, and keeps the history
    m = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert m["command"] == "fineked run --limit 5" and m["resumed"][0]["command"] == "fineked run --limit 5"


def test_different_config_in_same_dir_refuses(data, tmp_path):
    make_run(data, tmp_path / "r", editor="unedited").execute()
    with pytest.raises(UserError, match="another config.*editor"):
        make_run(data, tmp_path / "r", editor="ft").execute()
    with pytest.raises(UserError, match="seed: 0 -> 1"):
        make_run(data, tmp_path / "r", editor="unedited", seed=1).execute()
    make_run(data, tmp_path / "f", editor="ft").execute()
    with pytest.raises(UserError, match="hparams_hash"):
        make_run(data, tmp_path / "f", editor="ft", overrides={"lr": 0.1}).execute()


def test_unedited_floor_and_restore_is_bit_exact(data, tmp_path):
    run = make_run(data, tmp_path / "r", editor="unedited")
    run.execute()
    rows = [m for _, m in results(tmp_path / "r")]
    assert all(m["tok_locality"] == 1.0 for m in rows)  # nothing changed: post == pre
    assert all(m[k] in (None, 1.0) for m in rows for k in m if k.startswith("RLoc_tok"))
    before = parameter_digests(run.model, [n for n, _ in run.model.named_parameters()])
    ft = make_run(data, tmp_path / "f", editor="ft")
    ft.model, ft.tok = run.model, run.tok
    ft.execute()  # check_restore=True verifies every restore by hashes
    assert parameter_digests(run.model, list(before)) == before
    assert any(m["ES"] != r["ES"] or m["EM"] != r["EM"] for (_, m), r in zip(results(tmp_path / "f"), rows))


def test_manifest_records_provenance(data, tmp_path):
    run = make_run(data, tmp_path / "r", editor="unedited", seed=7)
    run.command = "fineked run --editor unedited"
    run.execute()
    m = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert m["editor"] == "unedited" and m["seed"] == 7 and m["dataset"]["fingerprint"] == data.fingerprint
    assert m["versions"]["torch"] == torch.__version__.split("+")[0] or m["versions"]["torch"]
    assert m["command"] == "fineked run --editor unedited" and "git_commit" in m and m["hparams_hash"]
    line = json.loads((tmp_path / "r" / "results.jsonl").read_text().splitlines()[0])
    assert {"case_id", "editor", "hparams_hash", "metrics", "edit_s", "eval_s"} <= set(line)


def test_subject_consistent_batches_share_a_subject_and_skip_co_edited_relations(data):
    batches = plan_batches(list(data.records), "subject", 2)
    assert [[r.case_id for r in b] for b in batches] == [["c1", "c2"], ["c3", "c5"], ["c4"]]
    skip = skip_relations(batches[0])
    assert skip == {"c1": {"P27"}, "c2": {"P103"}}
    assert [len(b) for b in plan_batches(list(data.records), "batch", 2)] == [2, 2, 1]
    req = edit_request(data.records[0])
    assert req.preserve[0].prompt == "Danielle Darrieux speaks" and req.target_new == "English"


def test_subject_batch_run_evaluates_every_case(data, tmp_path):
    make_run(data, tmp_path / "s", mode="subject", batch_size=2).execute()
    rows = dict(results(tmp_path / "s"))
    assert set(rows) == {c[0] for c in CASES}
    lines = {ln["case_id"]: ln for ln in map(json.loads, (tmp_path / "s" / "results.jsonl").read_text().splitlines())}
    # Tokyo has one case, so its batch is filled by a companion edit of its held-out constraint fact
    assert lines["c4"]["companions"] == ["c4+P1412"] and "companions" not in lines["c1"]
    # c1's only other same-subject fact left is P19 (middle): P27 was co-edited by c2
    assert rows["c1"]["RLoc_tok_easy"] is None and rows["c1"]["RLoc_tok_middle"] is not None


def test_companion_edits_rewrite_held_out_facts_to_another_object_of_the_relation(data):
    tokyo = data.records[3]
    objects = runner.relation_objects(data.records)
    (rel, req), = runner.companion_requests(tokyo, 1, objects, seed=0)
    assert rel == "P1412" and req.subject == "Tokyo" and req.prompt == "Tokyo speaks"
    assert req.target_true == "Japanese" and req.target_new in {"French", "German"}
    assert runner.companion_requests(tokyo, 1, objects, seed=0)[0][1] == req  # deterministic
    with pytest.raises(UserError, match="--constraints 2"):
        runner.companion_requests(tokyo, 2, objects, seed=0)
    assert skip_relations([tokyo], ["P1412"]) == {"c4": {"P1412"}}


def test_sequential_edits_accumulate_with_checkpoints(data, tmp_path):
    run = make_run(data, tmp_path / "q", mode="sequential", eval_every=2)
    names = [n for n, _ in run.model.named_parameters()]
    before = parameter_digests(run.model, names)
    run.execute()
    assert parameter_digests(run.model, names) != before  # never restored
    ckpts = [json.loads(x) for x in (tmp_path / "q" / "checkpoints.jsonl").read_text().splitlines()]
    assert [c["n_edits"] for c in ckpts] == [2, 4]
    assert ckpts[0]["metrics"]["ES"]["n"] == 2
    assert len(results(tmp_path / "q")) == len(CASES)


def test_sequential_resume_after_a_kill_in_a_checkpoint_matches_an_uninterrupted_run(data, tmp_path, monkeypatch):
    make_run(data, tmp_path / "a", mode="sequential", eval_every=2).execute()
    real, calls = runner.Run._evaluate_all, []

    def dies_on_second(self, recs, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, recs, *a, **k)
    monkeypatch.setattr(runner.Run, "_evaluate_all", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        make_run(data, tmp_path / "b", mode="sequential", eval_every=2).execute()
    assert not (tmp_path / "b" / "results.jsonl").exists()
    monkeypatch.setattr(runner.Run, "_evaluate_all", real)
    make_run(data, tmp_path / "b", mode="sequential", eval_every=2).execute()
    ck = lambda d: [json.loads(x) for x in (d / "checkpoints.jsonl").read_text().splitlines()]  # noqa: E731
    assert ck(tmp_path / "b") == ck(tmp_path / "a")
    assert results(tmp_path / "b") == results(tmp_path / "a")


ALPHA = {"stats_corpus": "bundled", "stats_n_samples": 60, "stats_max_len": 32, "v_num_grad_steps": 4,
         "context_prefixes": [[4, 2]], "layers": [1, 2], "nullspace_threshold": 1e9, "quiet": True}


def test_sequential_state_resumes_without_replaying_edits(data, tmp_path, monkeypatch):
    """Killed after 3 of 5 edits, the run goes on from its saved weights and AlphaEdit keys (no replay), and ends
    where an uninterrupted run ends: same results, checkpoints, weights and accumulated keys."""
    whole = make_run(data, tmp_path / "a", editor="alphaedit", mode="sequential", eval_every=2, overrides=ALPHA)
    whole.execute()
    real, calls = whole.editor.__class__.apply, []

    def dies_on_fourth(self, *a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(self, *a, **k)
    monkeypatch.setattr(whole.editor.__class__, "apply", dies_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        make_run(data, tmp_path / "b", editor="alphaedit", mode="sequential", eval_every=2, overrides=ALPHA).execute()
    saved = read_tensor_entry(tmp_path / "b" / "sequential_state.safetensors")
    assert saved["case_ids"] == ["c1", "c2", "c3"]
    calls.clear()
    resumed = make_run(data, tmp_path / "b", editor="alphaedit", mode="sequential", eval_every=2, overrides=ALPHA)
    resumed.execute()
    assert len(calls) == 2  # edits 4 and 5 only
    assert results(tmp_path / "b") == results(tmp_path / "a")
    ck = lambda d: [json.loads(x) for x in (d / "checkpoints.jsonl").read_text().splitlines()]  # noqa: E731
    assert ck(tmp_path / "b") == ck(tmp_path / "a")
    names = [n for n, _ in whole.model.named_parameters()]
    assert parameter_digests(resumed.model, names) == parameter_digests(whole.model, names)
    assert {l: K.shape[1] for l, K in resumed.editor.prev_keys.items()} == {1: 5, 2: 5}
    for layer, K in whole.editor.prev_keys.items():
        assert torch.equal(resumed.editor.prev_keys[layer], K)


def test_sequential_run_extended_with_a_larger_limit_goes_on_from_its_state(data, tmp_path, monkeypatch):
    make_run(data, tmp_path / "a", mode="sequential", eval_every=2).execute()
    short = make_run(data, tmp_path / "b", mode="sequential", eval_every=2)
    short.limit = 3
    short.execute()
    assert [c for c, _ in results(tmp_path / "b")] == ["c1", "c2", "c3"]
    real, calls = runner.edit_request, []

    def counted(r):
        calls.append(r.case_id)
        return real(r)
    monkeypatch.setattr(runner, "edit_request", counted)
    make_run(data, tmp_path / "b", mode="sequential", eval_every=2).execute()
    assert calls == ["c4", "c5"]
    assert results(tmp_path / "b") == results(tmp_path / "a")


def test_edit_diagnostics_reach_results_and_the_report(data, tmp_path):
    """Every case's line carries its own edit's diagnostics (in a batch too: request j is the batch's case j), and
    `fineked report` shows their medians."""
    import statistics

    from harness.report import write_report

    hp = {"layers": [1], "stats_corpus": "identity", "context_prefixes": [], "v_num_grad_steps": 3,
          "mom2_update_weight": 1.0, "quiet": True}
    out = tmp_path / "memit"
    run = make_run(data, out, editor="memit", mode="batch", batch_size=2, overrides=hp)
    seen = []
    real_apply = run.editor.apply

    def spy(model, tok, requests):
        result = real_apply(model, tok, requests)
        seen.extend(zip([r.case_id for r in requests], result.info["diagnostics"]))
        return result
    run.editor.apply = spy
    run.execute()
    lines = [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()]
    assert {ln["case_id"]: ln["diagnostics"] for ln in lines} == dict(seen)
    assert {"vstar_nll", "vstar_at_limit", "written_frac", "written_norm"} <= set(lines[0]["diagnostics"])
    md = write_report([out], tmp_path / "report")["diagnostics"]
    median = statistics.median(ln["diagnostics"]["written_frac"] for ln in lines)
    assert f"{median:.3f}" in md and "median written_frac" in md
