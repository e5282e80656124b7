"""The graph-safe v* step (VStarConfig.capture_steps: fixed shapes, Adam and the clamp as tensor ops, the loss read
once per step) gives the eager loop's optimisation. On CUDA that step is captured into a CUDA graph and replayed;
here it runs eagerly, so these tests check everything the graph replays except the capture itself."""
import dataclasses

import pytest
import torch

from editors.adapters import adapter_for
from editors.base import EditRequest
from editors.locate.hooks import block_output
from editors.locate.vstar import optimise_target_value
from editors.registry import make_editor
from test_locate_helpers import trained_tiny

REQ = EditRequest("c1", "The capital of France is", "France", "Tokyo", "Paris")
PREFIXES = ["Once upon a time. ", "The weather today is"]
TINY = {"stats_corpus": "bundled", "context_prefixes": [], "quiet": True, "v_num_grad_steps": 10, "v_lr": 0.5,
        "v_weight_decay": 1e-3, "clamp_norm_factor": 100.0}


def both(model, tok, cfg, **kw):
    """(eager, captured-step) TargetValues of the same optimisation."""
    return [optimise_target_value(model, tok, adapter_for(model), 1, REQ, PREFIXES,
                                  dataclasses.replace(cfg, capture_steps=c), **kw) for c in (False, True)]


def assert_same(eager, static):
    assert static.steps == eager.steps and static.backward_passes == eager.backward_passes
    assert static.nll_init == pytest.approx(eager.nll_init, abs=1e-5)
    assert static.loss == pytest.approx(eager.loss, rel=1e-4, abs=1e-5)
    assert static.nll == pytest.approx(eager.nll, rel=1e-4, abs=1e-5)
    assert torch.allclose(static.init, eager.init, atol=1e-5)
    assert float((static.delta - eager.delta).norm()) <= 1e-4 * float(eager.delta.norm()) + 1e-6
    assert static.at_limit == eager.at_limit


@pytest.mark.parametrize("family,site,prefix_cache", [("gpt2", "ffn_output", False), ("gptj", "block_output", True),
                                                      ("llama", "ffn_output", True)])
def test_captured_step_gives_the_eager_optimisation(family, site, prefix_cache):
    model, tok = trained_tiny(family)
    cfg = dataclasses.replace(make_editor("memit", "tiny", TINY).hparams.vstar(), loss_threshold=0.0,
                              cache_prefixes=prefix_cache)
    eager, static = both(model, tok, cfg, site=site)
    assert eager.steps == cfg.steps and eager.nll < eager.nll_init - 0.1  # it optimised
    assert_same(eager, static)


def test_captured_step_stops_where_the_eager_loop_stops():
    """Early stopping: the step whose loss meets the threshold ends the loop, and its delta (not the one its
    update made) is the result."""
    model, tok = trained_tiny("llama")
    cfg = dataclasses.replace(make_editor("memit", "tiny", TINY).hparams.vstar(), loss_threshold=0.0)
    full = optimise_target_value(model, tok, adapter_for(model), 1, REQ, PREFIXES, cfg, site="block_output")
    cfg = dataclasses.replace(cfg, loss_threshold=(full.nll_init + full.loss) / 2)
    eager, static = both(model, tok, cfg, site="block_output")
    assert 1 < eager.steps < cfg.steps  # it stopped early
    assert_same(eager, static)


def test_captured_step_clamps_like_the_eager_loop():
    model, tok = trained_tiny("gpt2")
    cfg = dataclasses.replace(make_editor("memit", "tiny", {**TINY, "clamp_norm_factor": 0.05}).hparams.vstar(),
                              loss_threshold=0.0)
    eager, static = both(model, tok, cfg, site="ffn_output")
    assert eager.at_limit
    assert_same(eager, static)


def test_captured_step_with_a_custom_intervention_computed_at_each_forward():
    """DiKE's form: the shift is a function of delta (hooks.Shift) read at every forward, a step map for the clamp,
    and a clean KL reference."""
    model, tok = trained_tiny("llama")
    ad = adapter_for(model)
    d = model.config.hidden_size
    W = torch.eye(d) * 0.5 + 0.01 * torch.randn(d, d, generator=torch.Generator().manual_seed(0))
    bias = 0.02 * torch.ones(d)

    def intervention(delta, positions):
        return block_output(model, ad, 1, positions, add=lambda: delta @ W.T + bias)

    cfg = dataclasses.replace(make_editor("memit", "tiny", TINY).hparams.vstar(), loss_threshold=0.0)
    eager, static = both(model, tok, cfg, intervention=intervention, init=torch.ones(d),
                         step_map=lambda x: x @ W.T, clean_kl_reference=True)
    assert eager.nll < eager.nll_init - 0.1
    assert_same(eager, static)
