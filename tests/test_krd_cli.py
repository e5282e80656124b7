"""`fineked train-krd` on a real small FINE-KED build and a tiny model: data rules, checkpoint files, resume."""
import json

import pytest
import torch

from fineked.export import load_fineked, load_krd_train
from fineked.records import LEVELS
from harness.cli import main
from harness.krd_cli import records_to_samples


def test_krd_train_subjects_are_disjoint_from_evaluation(small_build):
    out = small_build["out"]
    krd_subjects = {r.subject_id or r.subject for r in load_krd_train(out)}
    eval_subjects = {r.subject_id or r.subject for lv in LEVELS for r in load_fineked(out, lv)}
    assert krd_subjects and eval_subjects
    assert not krd_subjects & eval_subjects


def test_records_become_samples_with_siblings(small_build):
    recs = load_krd_train(small_build["out"])
    samples = records_to_samples(recs)
    by_id = {(r.prompt, r.target_true.str): r for r in recs}
    for s in samples[:20]:
        rec = by_id[(s.prompt, s.target)]
        assert s.subject == rec.subject and s.subject in s.prompt
        assert list(s.siblings) == [(f.prompt, f.target.str) for f in rec.fine_grained]
    assert len(records_to_samples(recs, limit=10)) == 10


def test_train_krd_writes_checkpoint_diagnostics_and_resumes(small_build, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FINEKED_CACHE", str(tmp_path / "cache"))
    ck = tmp_path / "ck"
    args = ["train-krd", "--model", "tiny:llama", "--data", str(small_build["out"]), "--samples", "60",
            "--layer", "1", "--repr-layer", "2", "--batch-size", "16", "--siblings", "2", "--val-fraction", "0.2",
            "--patience", "5", "--quiet", "--out", str(ck)]
    assert main(args + ["--epochs", "1"]) == 0
    meta = json.loads((ck / "krd.json").read_text())
    assert meta["layer"] == 1 and meta["repr_layer"] == 2 and meta["n_samples"] == 60
    assert meta["epochs_run"] == 1 and len(meta["curves"]["epochs"]) == 1
    assert -1 <= meta["metrics"]["silhouette"] <= 1
    premise = meta["metrics"]["premise"]  # checked against hand computations in test_krd_premise.py
    assert 0 < premise["n_samples"] < 60 and premise["n_o_prime_rows"] > 0  # held-out samples only
    assert set(premise["nll_o"]) == {"h_s", "z_r", "z_u"} == set(premise["nll_o_prime"])
    assert premise["premise_met"] == all(premise["meets"].values())
    for f in ("krd.safetensors", "tsne.png", "curves.png", "resume.safetensors"):
        assert (ck / f).stat().st_size > 0
    first_epoch = meta["curves"]["epochs"][0]
    assert main(args + ["--epochs", "2"]) == 0  # resumes: runs only epoch 2
    meta2 = json.loads((ck / "krd.json").read_text())
    assert meta2["epochs_run"] == 2 and meta2["curves"]["epochs"][0] == first_epoch
    assert main(args + ["--epochs", "2"]) == 0  # nothing left to train: the premise is measured again
    assert json.loads((ck / "krd.json").read_text())["epochs_run"] == 2
    printed = capsys.readouterr().out
    assert "silhouette" in printed and "premise on" in printed and "o' (p(s,r'))" in printed
    # a checkpoint for other layers is refused by dike, with the command to fix it
    from editors.registry import make_editor
    from editors.base import EditRequest
    from editors.tiny import tiny_model_and_tokenizer
    model, tok = tiny_model_and_tokenizer("llama")
    ed = make_editor("dike", "tiny", {"layers": [2], "repr_layer": 2, "krd_path": str(ck), "stats_corpus": "identity"})
    from editors.dike.checkpoint import KRDCheckpointError
    with pytest.raises(KRDCheckpointError, match="layer=1, not 2"):
        ed.apply(model, tok, [EditRequest("c", "The capital of France is", "France", "Rome")])


def test_train_krd_flags_left_out_take_krd_train_config_s_defaults():
    """The CLI repeats no default: with no training flag its config is KRDTrainConfig's, and that is what the CLI
    ran with before its defaults moved into the dataclass (β 0.05, lr 1e-4, --init split, no warm-up)."""
    from editors.dike.train import KRDTrainConfig
    from harness.cli import build_parser
    from harness.krd_cli import train_config

    parser = build_parser()
    cfg = train_config(parser.parse_args(["train-krd", "--model", "tiny:llama"]), 1, 2)
    assert cfg == KRDTrainConfig(layer=1, repr_layer=2)
    before = dict(tau=0.1, alpha=1.0, beta=0.05, siblings=10, batch_size=32, llm_batch=32, con_per_batch=0,
                  epochs=2, lr=1e-4, init="split", val_fraction=0.05, patience=1, warmup_epochs=0, seed=0,
                  no_ctr=False, no_kc=False, cache_states=True)
    assert {k: getattr(cfg, k) for k in before} == before
    # every training flag reaches its field
    flags = ["--tau", "0.2", "--alpha", "2", "--beta", "0.5", "--siblings", "3", "--batch-size", "8", "--llm-batch",
             "4", "--con-per-batch", "2", "--epochs", "5", "--lr", "0.01", "--init", "random", "--val-fraction",
             "0.1", "--patience", "3", "--warmup-epochs", "4", "--seed", "7", "--no-ctr", "--no-kc",
             "--no-cache-states"]
    cfg = train_config(parser.parse_args(["train-krd", "--model", "tiny:llama", *flags]), 1, 2)
    assert {k: getattr(cfg, k) for k in before} == dict(
        tau=0.2, alpha=2.0, beta=0.5, siblings=3, batch_size=8, llm_batch=4, con_per_batch=2, epochs=5, lr=0.01,
        init="random", val_fraction=0.1, patience=3, warmup_epochs=4, seed=7, no_ctr=True, no_kc=True,
        cache_states=False)
