"""--device / --dtype: parsing, loading, statistics precision, cache keys; random:NAME models at the paper's shapes."""
import json

import pytest
import torch

from editors.placement import PlacementError, parse_device, parse_dtype, placement_tag
from editors.random_models import random_config, random_model
from harness.cli import main
from harness.commands import load_named_model
from test_runner import write_records


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FINEKED_CACHE", str(tmp_path / "cache"))


def test_parse_device_and_dtype():
    assert parse_device("cpu") == torch.device("cpu")
    assert parse_dtype("bfloat16") is torch.bfloat16 and parse_dtype(None) is torch.float32
    for bad, word in (("float8", "--dtype"), ("float64", "--dtype")):
        with pytest.raises(PlacementError, match=word):
            parse_dtype(bad)
    with pytest.raises(PlacementError, match="cpu, cuda or cuda:N"):
        parse_device("tpu:0")
    if not torch.cuda.is_available():
        with pytest.raises(PlacementError, match="no CUDA GPU"):
            parse_device("cuda:0")


def test_bad_placement_flags_are_one_line(tmp_path, capsys):
    data = write_records(tmp_path / "cases.jsonl")
    for flag in (["--dtype", "float8"], ["--device", "npu"]):
        rc = main(["run", "--editor", "unedited", "--model", "tiny:llama", "--dataset", str(data), "--quiet",
                   "--out", str(tmp_path / "r"), *flag])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and flag[0] in err


def test_dtype_reaches_the_model_and_every_cache_key():
    from editors.locate.fingerprint import model_fingerprint
    from editors.locate.stats import stats_path
    from harness.evaluate import pre_edit_cache_path

    m32, _, _ = load_named_model("tiny:llama", "cpu", "float32")
    m16, _, _ = load_named_model("tiny:llama", "cpu", "bfloat16")
    assert {p.dtype for p in m16.parameters()} == {torch.bfloat16}
    assert placement_tag(m32) == "" and placement_tag(m16) == "-bfloat16"
    # float32 on CPU keeps the fingerprint it had before the flags existed (warm caches stay valid)
    assert not model_fingerprint(m32).endswith("-float32") and model_fingerprint(m16).endswith("-bfloat16")
    assert stats_path(m32, 1, "bundled", 10, 32, torch.float32) != stats_path(m16, 1, "bundled", 10, 32, torch.float32)
    assert pre_edit_cache_path("tiny:llama", "fp", m32) != pre_edit_cache_path("tiny:llama", "fp", m16)
    from editors.locate.vstar_cache import model_state_digest
    assert model_state_digest(m32) != model_state_digest(m16)


def test_statistics_of_a_bfloat16_model_accumulate_in_float64():
    """C of a bfloat16 model is C of the same (bf16-rounded) weights run in float32, up to the bf16 forward pass
    (measured 3.1e-3 relative); accumulating one text at a time in the model's dtype gives 9.5e-3."""
    from editors.adapters import adapter_for
    from editors.locate.stats import collect_second_moments, corpus_texts

    m16, tok, _ = load_named_model("tiny:llama", "cpu", "bfloat16")
    m32 = load_named_model("tiny:llama", "cpu", "bfloat16")[0].float()  # the same rounded weights, float32 passes
    ad = adapter_for(m16)
    texts = corpus_texts("bundled", 80)
    C16, n = collect_second_moments(m16, tok, ad, [1], texts, 32, torch.float32, batch_size=1, quiet=True)
    C32, _ = collect_second_moments(m32, tok, ad, [1], texts, 32, torch.float32, batch_size=1, quiet=True)
    assert n > 2000 and C16[1].dtype == torch.float32
    rel = ((C16[1] - C32[1]).norm() / C32[1].norm()).item()
    assert rel < 6e-3, rel


def test_cli_run_in_bfloat16_records_placement(tmp_path):
    data = write_records(tmp_path / "cases.jsonl")
    out = tmp_path / "run"
    assert main(["run", "--editor", "rome", "--model", "tiny:llama", "--dtype", "bfloat16", "--device", "cpu",
                 "--dataset", str(data), "--limit", "2", "--out", str(out), "--quiet",
                 "--set", "stats_corpus=identity", "--set", "v_num_grad_steps=3"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["placement"] == {"device": "cpu", "dtype": "bfloat16"}
    assert manifest["config"]["placement"] == "bfloat16"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["gpu_peak_mb"] == {"edit": None, "eval": None}  # null on CPU
    lines = [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(ln["gpu_peak_mb"] == {"edit": None, "eval": None} for ln in lines)
    # resuming the same folder in float32 is another config: refused in one line
    assert main(["run", "--editor", "rome", "--model", "tiny:llama", "--dataset", str(data), "--limit", "2",
                 "--out", str(out), "--quiet", "--set", "stats_corpus=identity",
                 "--set", "v_num_grad_steps=3"]) == 2


# --- random:NAME ------------------------------------------------------------------------------------------------

REAL = {  # name: (layers, width, FFN width, vocabulary, parameters in billions, +-)
    "gpt2-xl": (48, 1600, 6400, 50257, 1.558),
    "gpt-j-6b": (28, 4096, 16384, 50400, 6.051),
    "llama3-8b": (32, 4096, 14336, 128256, 8.030),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_random_models_have_the_papers_shapes(name):
    """Built on the meta device: every shape is real, nothing is allocated."""
    from editors.adapters import adapter_for

    model, tok, key = random_model(name, device="meta")
    layers, width, ffn, vocab, billions = REAL[name]
    ad = adapter_for(model)
    W = ad.weight_as_out_in(ad.ffn_out_weight(model, 0))
    assert key == name and ad.n_layers(model) == layers and tuple(W.shape) == (width, ffn)
    assert model.get_input_embeddings().weight.shape == (vocab, width)
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()) / 1e9
    assert abs(params - billions) < 0.01, params
    assert max(tok.get_vocab().values()) < vocab  # the offline tokenizer's ids are valid rows


def scaled_config(tmp_path, name: str, **shrink) -> str:
    """A copy of a real random config with fewer, narrower layers (same architecture), for CPU tests."""
    values, _ = random_config(name)
    values.update(shrink)
    path = tmp_path / f"small-{name}.json"
    path.write_text(json.dumps(values))
    return str(path)


SMALL = {"gpt2-xl": dict(n_layer=3, n_embd=64, n_head=4, vocab_size=512),
         "gpt-j-6b": dict(n_layer=3, n_embd=64, n_head=4, rotary_dim=8, vocab_size=512),
         "llama3-8b": dict(num_hidden_layers=3, hidden_size=64, intermediate_size=160, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=512)}


def test_random_models_are_seeded(tmp_path):
    path = scaled_config(tmp_path, "llama3-8b", **SMALL["llama3-8b"])
    a, b, c = (random_model(path, seed=s)[0] for s in (0, 0, 1))
    wa, wb, wc = (m.get_input_embeddings().weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_cli_run_on_a_scaled_down_random_model(tmp_path, name):
    """The whole pipeline (statistics, v*, solve, evaluation) on random:PATH of each family, in bfloat16."""
    data = write_records(tmp_path / "cases.jsonl")
    path = scaled_config(tmp_path, name, **SMALL[name])
    out = tmp_path / "run"
    assert main(["run", "--editor", "memit", "--model", f"random:{path}", "--dtype", "bfloat16",
                 "--dataset", str(data), "--limit", "2", "--out", str(out), "--quiet", "--set", "layers=[1,2]",
                 "--set", "stats_n_samples=40", "--set", "v_num_grad_steps=2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cases"] == 2 and "ES" in summary["metrics"]


def test_unknown_random_model_is_one_line(tmp_path, capsys):
    data = write_records(tmp_path / "cases.jsonl")
    assert main(["run", "--editor", "unedited", "--model", "random:gpt5", "--dataset", str(data)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "random:llama3-8b" in err


def test_model_fingerprint_ignores_where_and_how_the_checkpoint_was_loaded(tmp_path):
    """A KRD or statistics entry made under one FINEKED_CACHE must stay valid under another: the fingerprint may not
    depend on the folder a checkpoint was loaded from, the transformers release or the load dtype (placement_tag
    carries the dtype). It must still change when the architecture or the weights do."""
    from transformers import AutoModelForCausalLM

    from editors.locate.fingerprint import model_fingerprint

    model, _, _ = load_named_model("tiny:llama", "cpu", "float32")
    prints = []
    for folder in ("a/tiny-llama", "b/elsewhere/tiny-llama"):
        model.save_pretrained(tmp_path / folder)
        loaded = AutoModelForCausalLM.from_pretrained(tmp_path / folder, dtype=torch.bfloat16).float()
        loaded.config.transformers_version = f"0.0.{len(prints)}"
        prints.append(model_fingerprint(loaded))
    assert prints[0] == prints[1] and prints[0].startswith("tiny-llama-")
    wider = AutoModelForCausalLM.from_config(model.config.__class__(**{**model.config.to_dict(), "num_hidden_layers":
                                                                      model.config.num_hidden_layers + 1}))
    wider.config._name_or_path = str(tmp_path / "a/tiny-llama")
    assert model_fingerprint(wider) != prints[0]
