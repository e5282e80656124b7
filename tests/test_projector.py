"""AlphaEdit's projector cache: keyed by the statistics' exact bytes, read back instead of recomputed, damage
recomputed, and AlphaEdit's edits unchanged by it."""
import pytest
import torch

from common.cache import write_tensor_entry
from editors.locate.projector import cached_projector, projector_path
from editors.locate.solve import nullspace_projector


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FINEKED_CACHE", str(tmp_path / "cache"))


def stats(d: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    K = torch.randn(d, 3 * d, generator=g) * torch.linspace(0.01, 2.0, d)[:, None]  # a spread spectrum
    return (K @ K.T / K.shape[1]).float()


def test_projector_is_computed_once_then_read():
    C = stats()
    P = cached_projector(C, 0.05, "cpu")
    assert P.dtype == torch.float64 and torch.equal(P, nullspace_projector(C, 0.05))
    path = projector_path(C, 0.05, "cpu")
    assert path.exists()
    marker = torch.eye(C.shape[0], dtype=torch.float64)  # a valid entry that eigh would never give for C
    write_tensor_entry(path, marker)
    assert torch.equal(cached_projector(C, 0.05, "cpu"), marker)  # read from disk, not recomputed


def test_key_follows_the_statistics_threshold_and_device_kind():
    C = stats()
    C2 = C.clone()
    C2[3, 5] += 1e-6  # one element, one ulp-scale change: other statistics, other entry
    base = projector_path(C, 0.05, "cpu")
    assert projector_path(C.clone(), 0.05, "cpu") == base
    assert projector_path(C2, 0.05, "cpu") != base
    assert projector_path(C, 0.02, "cpu") != base
    assert projector_path(C.double(), 0.05, "cpu") != base
    assert projector_path(C, 0.05, "meta") != base


def test_damaged_entry_is_recomputed():
    C = stats()
    P = cached_projector(C, 0.05, "cpu")
    path = projector_path(C, 0.05, "cpu")
    path.write_bytes(path.read_bytes()[:-100])  # torn
    assert torch.equal(cached_projector(C, 0.05, "cpu"), P)
    write_tensor_entry(path, torch.full_like(P, float("nan")))  # NaN
    assert torch.equal(cached_projector(C, 0.05, "cpu"), P)
    write_tensor_entry(path, P[:-1])  # wrong shape
    assert torch.equal(cached_projector(C, 0.05, "cpu"), P)


def test_alphaedit_edit_is_the_same_from_a_cached_projector():
    from editors.alphaedit import AlphaEditEditor
    from editors.base import EditRequest
    from editors.tiny import tiny_model_and_tokenizer

    model, tok = tiny_model_and_tokenizer("llama")
    hp = {"stats_corpus": "bundled", "stats_n_samples": 60, "stats_max_len": 32, "v_num_grad_steps": 3,
          "context_prefixes": [[4, 2]], "layers": [1, 2], "quiet": True}
    req = [EditRequest("a", "The capital of France is", "France", "Tokyo")]
    first = AlphaEditEditor.from_config("tiny", hp)
    r1 = first.apply(model, tok, req)
    w1 = {n: p.detach().clone() for n, p in model.named_parameters() if n in r1.originals}
    r1.restore(model)
    again = AlphaEditEditor.from_config("tiny", hp)  # a fresh instance: its projectors come from disk
    r2 = again.apply(model, tok, req)
    w2 = {n: p.detach().clone() for n, p in model.named_parameters() if n in r2.originals}
    r2.restore(model)
    assert w1.keys() == w2.keys() and all(torch.equal(w1[n], w2[n]) for n in w1)
    from common.cache import cache_dir
    assert len(list((cache_dir() / "projectors").glob("*.safetensors"))) == 2  # one per edited layer
