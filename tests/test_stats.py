"""Layer statistics: equal an independent per-text computation, honour the caps, and are cached on disk."""
import gzip

import pytest
import torch

from common.cache import read_tensor_entry

from editors.adapters import adapter_for
from editors.locate import stats
from editors.locate.stats import StatsError, layer_second_moments, stats_path
from editors.tiny import tiny_model_and_tokenizer


def layer_second_moment(model, tok, adapter, layer, *rest, **kw):
    """C of one layer through layer_second_moments, the only entry point the editors use."""
    return layer_second_moments(model, tok, adapter, [layer], *rest, **kw)[layer]

TEXTS = ["The capital of France is Paris .", "Danielle Darrieux speaks French and English .",
         "Berlin Germany Rome Italy Madrid Spain London England Tokyo Japan Ottawa Canada was born in the city of",
         "who plays the guitar"]


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("FINEKED_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(TEXTS) + "\n")
    return str(path)


def reference_moment(model, tok, layer, texts, max_len):
    """Plain hook on the down projection, one unpadded text at a time, full forward passes."""
    ad = adapter_for(model)
    mod = model.get_submodule(ad.ffn_out_module_name(layer))
    seen = []
    h = mod.register_forward_pre_hook(lambda m, a: seen.append(a[0][0].double()))
    for t in texts:
        model(**tok(t, return_tensors="pt", truncation=True, max_length=max_len))
    h.remove()
    K = torch.cat(seen)
    return K.T @ K / K.shape[0], K.shape[0]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_second_moment_matches_independent_computation(family, corpus):
    model, tok = tiny_model_and_tokenizer(family)
    C = layer_second_moment(model, tok, adapter_for(model), 2, corpus, n_samples=3, max_len=12,
                            dtype=torch.float64, quiet=True)
    ref, n_tok = reference_moment(model, tok, 2, TEXTS[:3], 12)
    assert torch.allclose(C, ref, rtol=1e-4, atol=1e-7)  # the model itself runs in float32
    path = stats_path(model, 2, corpus, 3, 12, torch.float64)
    assert read_tensor_entry(path)["tokens"] == n_tok  # padding excluded, third text capped at 12 tokens


def test_several_layers_in_one_pass_equal_single_layers(corpus):
    model, tok = tiny_model_and_tokenizer("gptj")
    ad = adapter_for(model)
    both = layer_second_moments(model, tok, ad, [0, 3], corpus, 4, 16, torch.float64, quiet=True)
    for l in (0, 3):
        assert torch.allclose(both[l], reference_moment(model, tok, l, TEXTS, 16)[0], rtol=1e-4, atol=1e-7)  # float32 model, batched


def test_cached_statistics_skip_the_computation(corpus, monkeypatch):
    model, tok = tiny_model_and_tokenizer("llama")
    ad = adapter_for(model)
    first = layer_second_moment(model, tok, ad, 1, corpus, 4, 16, torch.float32, quiet=True)

    def boom(*a, **k):
        raise AssertionError("statistics recomputed despite the cache")

    monkeypatch.setattr(stats, "collect_second_moments", boom)
    again = layer_second_moment(model, tok, ad, 1, corpus, 4, 16, torch.float32, quiet=True)
    assert torch.equal(first, again)
    with pytest.raises(AssertionError, match="recomputed"):  # another sample count is another cache entry
        layer_second_moment(model, tok, ad, 1, corpus, 3, 16, torch.float32, quiet=True)


def test_identity_and_bad_corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("FINEKED_CACHE", str(tmp_path))
    model, tok = tiny_model_and_tokenizer("gpt2")
    ad = adapter_for(model)
    assert torch.equal(layer_second_moment(model, tok, ad, 0, "identity", 1, 1), torch.eye(256))
    with pytest.raises(StatsError, match="use identity, bundled, wikitext or a text file"):
        layer_second_moment(model, tok, ad, 0, "no-such-corpus", 1, 8)


def test_bundled_corpus_is_small_and_readable():
    assert stats.BUNDLED.stat().st_size < 2_000_000
    with gzip.open(stats.BUNDLED, "rt") as fh:
        lines = fh.read().splitlines()
    assert len(lines) > 5000 and all(lines)
    assert len(stats.corpus_texts("bundled", 50)) == 50
