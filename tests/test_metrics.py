"""Each metric against hand-computed values on hand-built scores, plus aggregation and the pre-edit cache."""
import math

import pytest
import torch

from fineked.records import record_from_dict
from editors.tiny import tiny_model_and_tokenizer
from harness import evaluate
from harness.aggregate import aggregate
from harness.metrics import METRICS, FactProbe, case_metrics, ngram_entropy
from harness.scoring import TargetScore


def ts(nll, argmax=(1,), target=(1,)):
    """A TargetScore with one token per entry of target, mean NLL `nll`."""
    return TargetScore(tuple(target), tuple([-nll] * len(target)), tuple(argmax))


def test_case_metrics_match_hand_computation():
    e = math.exp
    m = case_metrics(
        edit_new=ts(0.5, argmax=(3, 9), target=(3, 4)), edit_true=ts(1.0),
        para=[(ts(2.0, argmax=(2,), target=(1,)), ts(1.0)), (ts(0.1, argmax=(7,), target=(7,)), ts(0.2))],
        neigh=[(ts(3.0), ts(1.0, argmax=(5, 6), target=(5, 8)))],
        neigh_pre_argmax=[(5, 7)],
        facts=[FactProbe("easy", ts(1.0, argmax=(2,), target=(2,)), ts(2.0), (2,), True),
               FactProbe("hard", ts(3.0, argmax=(4,), target=(4,)), ts(2.0), (9,), False),
               FactProbe("hard", ts(0.5, argmax=(1, 2), target=(1, 2)), ts(2.0), (1, 3), True)])
    assert m["ES"] == 1.0 and m["EM"] == pytest.approx(e(-0.5) - e(-1.0))
    assert m["PS"] == 0.5 and m["PM"] == pytest.approx(((e(-2) - e(-1)) + (e(-0.1) - e(-0.2))) / 2)
    assert m["NS"] == 1.0 and m["NM"] == pytest.approx(e(-1) - e(-3))
    assert m["tok_efficacy"] == 0.5  # 3 right, 9 wrong for 4
    assert m["tok_generalization"] == pytest.approx((0 + 1) / 2)
    assert m["tok_locality"] == 0.5
    assert m["RLoc_tok_easy"] == 1.0 and m["RLoc_tok_middle"] is None and m["RLoc_tok_hard"] == pytest.approx(0.25)
    assert m["RLoc_prob_easy"] == 1.0 and m["RLoc_prob_hard"] == 0.5
    assert m["RLoc_tok_known_hard"] == 0.5 and m["RLoc_prob_known_hard"] == 1.0
    assert m["RLoc_tok_known_easy"] == 1.0 and m["RLoc_tok_known_middle"] is None


def test_aggregate_means_harmonic_score_level_average_and_ci():
    rows = [{"ES": 1.0, "PS": 1.0, "NS": 0.5, "RLoc_tok_easy": 1.0, "RLoc_tok_hard": 0.0},
            {"ES": 0.0, "PS": None, "NS": 1.0, "RLoc_tok_easy": 0.5, "RLoc_tok_hard": None},
            {"ES": 1.0, "PS": 0.0, "NS": 1.0},
            {"ES": 1.0, "PS": 1.0, "NS": 0.5}]
    agg = aggregate(rows, n_boot=500, seed=3)
    assert agg["ES"].value == 0.75 and agg["ES"].n == 4
    assert agg["PS"].value == pytest.approx(2 / 3) and agg["PS"].n == 3
    es, ps, ns = 0.75, 2 / 3, 0.75
    assert agg["Score"].value == pytest.approx(3 / (1 / es + 1 / ps + 1 / ns))
    assert agg["RLoc_tok_avg"].value == pytest.approx((0.75 + 0.0) / 2)  # mean of the levels present
    assert "RLoc_tok_middle" not in agg and "fluency" not in agg
    for a in agg.values():
        assert a.lo <= a.value + 1e-12 and a.value <= a.hi + 1e-12
    assert agg["ES"].lo < agg["ES"].hi
    assert aggregate(rows, n_boot=500, seed=3) == agg  # seeded
    flat = aggregate([{"ES": 1.0}] * 5)
    assert (flat["ES"].lo, flat["ES"].hi) == (1.0, 1.0)


def test_ngram_entropy_hand_computed():
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))  # bigrams ab, ba, ab
    h3 = 1.0  # trigrams aba, bab
    assert ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * h3) / 2)
    assert ngram_entropy("x x x x x") == 0.0


def test_metric_table_is_consistent():
    names = [m.name for m in METRICS]
    assert len(names) == len(set(names))
    for m in METRICS:
        assert m.protocol in {"prob", "token", "generation"}
        assert m.aggregation in {"mean", "hmean", "mean_of"}
        assert all(c in names for c in m.components)


def _record(cid="c1"):
    return record_from_dict({
        "case_id": cid, "subject": "Danielle Darrieux", "subject_id": "Q1", "relation_id": "P103",
        "prompt": "The mother tongue of Danielle Darrieux is", "target_true": {"str": "French"},
        "target_new": {"str": "English"}, "paraphrase_prompts": ["Danielle Darrieux speaks"],
        "neighborhood_prompts": ["The native language of Berlin is"],
        "fine_grained": [{"relation_id": "P27", "prompt": "Danielle Darrieux is a citizen of",
                          "target": {"str": "France"}, "similarity": 0.2, "level": "easy"},
                         {"relation_id": "P19", "prompt": "Danielle Darrieux was born in",
                          "target": {"str": "Paris"}, "similarity": 0.8, "level": "hard"}]})


def test_unedited_locality_is_perfect_and_perturbation_lowers_it(tmp_path):
    model, tok = tiny_model_and_tokenizer("llama")
    recs = [_record()]
    pre = evaluate.load_or_compute_pre_edit(model, tok, recs, tmp_path / "pre.json")
    row = evaluate.evaluate_cases(model, tok, recs, pre, gen_tokens=5)[0]
    assert row["tok_locality"] == 1.0 and row["RLoc_tok_easy"] == 1.0 and row["RLoc_tok_hard"] == 1.0
    assert row["fluency"] is not None and row["fluency"] >= 0
    with torch.no_grad():
        torch.manual_seed(1)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    row = evaluate.evaluate_cases(model, tok, recs, pre)[0]
    assert min(row["tok_locality"], row["RLoc_tok_easy"], row["RLoc_tok_hard"]) < 1.0


def test_pre_edit_predictions_are_cached_on_disk(tmp_path, monkeypatch):
    model, tok = tiny_model_and_tokenizer("gpt2")
    path = tmp_path / "pre.json"
    first = evaluate.load_or_compute_pre_edit(model, tok, [_record()], path)
    assert path.exists()

    def boom(*a, **k):
        raise AssertionError("recomputed despite the cache")
    monkeypatch.setattr(evaluate, "compute_pre_edit", boom)
    assert evaluate.load_or_compute_pre_edit(model, tok, [_record()], path) == first


def test_pre_edit_cache_is_keyed_by_weights_too():
    model, _ = tiny_model_and_tokenizer("gpt2")
    other, _ = tiny_model_and_tokenizer("gpt2", seed=1)
    same, _ = tiny_model_and_tokenizer("gpt2")
    key = evaluate.pre_edit_cache_path("m", "fp", model)
    assert key == evaluate.pre_edit_cache_path("m", "fp", same)
    assert key != evaluate.pre_edit_cache_path("m", "fp", other)
    assert key != evaluate.pre_edit_cache_path("m", "fp2", model)


def test_a_new_metric_is_one_table_entry_and_reaches_rows_aggregates_reports_and_the_headline(tmp_path, monkeypatch):
    # The only change: one more entry in harness.metrics.METRICS. Everything downstream must pick it up.
    from harness import metrics
    from harness.report import RunData, csv_text, table_rows

    nll = metrics.Metric("edit_nll", "prob", "mean", False, "mean token NLL of o* on the edit prompt",
                         lambda c: c.edit_new.mean_nll, percent=False, tags=frozenset({metrics.HEADLINE}))
    monkeypatch.setattr(metrics, "METRICS", (*METRICS, nll))
    model, tok = tiny_model_and_tokenizer("gpt2")
    recs = [_record()]
    pre = evaluate.load_or_compute_pre_edit(model, tok, recs, None)
    row = evaluate.evaluate_cases(model, tok, recs, pre)[0]
    from harness.scoring import score_pairs
    independent = score_pairs(model, tok, [(recs[0].prompt, recs[0].target_new.str)])[0].mean_nll
    assert row["edit_nll"] == pytest.approx(independent)
    rows = [row, {**row, "edit_nll": row["edit_nll"] + 1.0}]
    agg = aggregate(rows, n_boot=50)
    assert agg["edit_nll"].value == pytest.approx(independent + 0.5) and agg["edit_nll"].n == 2
    run = RunData(tmp_path, {"dataset": {"name": "d"}, "editor": "e", "model": "m",
                             "config": {"mode": "single", "batch_size": 1}}, "h", rows, agg, ["c1", "c2"])
    header, body = table_rows([run])
    assert header[-1] == "edit_nll ↓" and body[0][-1].startswith(f"{independent + 0.5:.2f} [")
    assert csv_text([run]).splitlines()[0].endswith("edit_nll,edit_nll_lo,edit_nll_hi,edit_nll_n")
    assert metrics.tagged(metrics.HEADLINE)[-1] is nll


def test_views_select_metrics_by_tag_and_level():
    from harness import metrics
    assert [m.name for m in metrics.rloc_levels("token")] == ["RLoc_tok_easy", "RLoc_tok_middle", "RLoc_tok_hard",
                                                               "RLoc_tok_avg"]
    assert [m.name for m in metrics.tagged(metrics.PROGRESS)] == ["ES", "PS", "NS", "tok_locality", "RLoc_tok_hard"]
    assert all(m.compute is None for m in METRICS if m.aggregation != "mean")
    assert all(m.compute is not None for m in METRICS if m.aggregation == "mean")
