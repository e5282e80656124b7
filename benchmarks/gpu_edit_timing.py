"""Edits per second of the locate-then-edit editors on randomly initialised GPT2-XL or LLaMA-3-8B shapes.

No weights travel: the model is built from a config on the target device (editors.random_models, as
`fineked run --model random:NAME`), the tokenizer is the offline tiny BPE of the family's style (its ids fit every
vocabulary), statistics come from the bundled corpus (capped). Speed does not
depend on the weights, but early stopping never triggers on a random model, so every edit runs all v* steps
(a worst case). The first edit of each editor (statistics, prefixes) is reported apart.

    python benchmarks/gpu_edit_timing.py                          # GPT2-XL shape on cuda, upstream gpt2-xl hparams
    python benchmarks/gpu_edit_timing.py --shape llama3-8b --dtype bfloat16   # upstream Llama3-8B hparams
    python benchmarks/gpu_edit_timing.py --shape tiny-llama --device cpu --edits 3   # a tiny shape, for tests
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from typing import Any

import torch

from editors.adapters import adapter_for
from editors.base import EditRequest
from editors.locate.vstar import VStarConfig, optimise_target_value
from editors.placement import parse_device, peak_memory_mb, reset_peak_memory
from editors.random_models import known_random_models, random_model
from editors.registry import make_editor
from editors.tiny import tiny_model_and_tokenizer

# the paper's shapes: editors/random_configs (--model random:NAME); the tiny shapes are editors.models' unit-test
# models (no hparams YAML)
SHAPES = known_random_models()
TINY = {"tiny": "gpt2", "tiny-llama": "llama"}
SUBJECTS = ["France", "Germany", "Italy", "Japan", "Spain", "Canada", "England", "Danielle Darrieux"]
PROMPTS = ["The capital of {} is", "The official language of {} is", "{} is located in the continent of"]
TARGETS = ["Tokyo", "Berlin", "Asia", "English", "Rome", "Madrid"]


def build_model(shape: str, device: str, dtype: torch.dtype) -> tuple[Any, Any, str]:
    """(model, tokenizer, hparams key) for `shape`, built on `device` in `dtype`."""
    if shape in TINY:
        model, tok = tiny_model_and_tokenizer(TINY[shape])
        return model.to(device=device, dtype=dtype), tok, "tiny"
    return random_model(shape, device, dtype)


def requests(n: int) -> list[EditRequest]:
    out = []
    for i in range(n):
        s = SUBJECTS[i % len(SUBJECTS)]
        p = PROMPTS[(i // len(SUBJECTS)) % len(PROMPTS)].format(s)
        out.append(EditRequest(f"r{i}", p, s, TARGETS[i % len(TARGETS)]))
    return out


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def compare_vstar(model: Any, tok: Any, key: str, req: EditRequest, device: str) -> None:
    """MEMIT's v* for one request, eager and captured (twice each: the first pays for allocation and capture)."""
    hp = make_editor("memit", key, {"quiet": True}).hparams
    layer, out = (hp.layers or [model.config.num_hidden_layers // 2])[-1], {}  # tiny shapes name no layers
    for mode in (False, True, False, True):
        cfg = dataclasses.replace(hp.vstar(), capture_steps=mode, loss_threshold=0.0)
        sync(device)
        t = time.perf_counter()
        tv = optimise_target_value(model, tok, adapter_for(model), layer, req, [], cfg, site="block_output")
        sync(device)
        out[mode] = (time.perf_counter() - t, tv)
    (te, eager), (tc, captured) = out[False], out[True]
    rel = float((captured.delta - eager.delta).norm() / eager.delta.norm())
    print(f"v* ({eager.steps} steps, layer {layer}): eager {te:.3f} s, captured {tc:.3f} s ({te / tc:.1f}x); "
          f"|delta_captured - delta_eager| / |delta_eager| = {rel:.2e}; nll {eager.nll:.4f} vs {captured.nll:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="gpt2-xl", choices=[*SHAPES, *TINY])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--editors", default="rome,memit")
    ap.add_argument("--edits", type=int, default=10, help="timed edits per editor (after one warm-up edit)")
    ap.add_argument("--stats-samples", type=int, default=1000)
    ap.add_argument("--vstar", default="auto", choices=["auto", "eager", "captured"],
                    help="v* steps: captured into a CUDA graph (auto: on CUDA) or the eager loop")
    ap.add_argument("--compare-vstar", action="store_true",
                    help="first: one v* both ways, their times and the relative difference of their deltas")
    args = ap.parse_args()
    if args.vstar != "auto":
        VStarConfig.uses_captured_steps = lambda self, device: args.vstar == "captured"
    dtype = getattr(torch, args.dtype)
    t0 = time.perf_counter()
    model, tok, key = build_model(args.shape, args.device, dtype)
    print(f"model: {args.shape} shape ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M "
          f"params, {args.dtype}) on {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else "")
          + f", built in {time.perf_counter() - t0:.1f}s")
    reqs = requests(args.edits + 1)
    device = parse_device(args.device)
    if args.compare_vstar:
        compare_vstar(model, tok, key, reqs[0], args.device)
    print(f"{'editor':8} {'warm-up s':>9} {'again s':>7} {'edits/s':>8} {'s/edit':>7} {'keys':>6} {'v*':>6} "
          f"{'solve':>6} {'steps':>5} {'peak MiB':>9}")

    def first_edit_seconds(spec: str) -> float:
        """A fresh editor's first edit: statistics, prefixes and (AlphaEdit) projectors from the disk cache or made."""
        editor = make_editor(spec, key, {"stats_corpus": "bundled", "stats_n_samples": args.stats_samples,
                                         "quiet": True})
        sync(args.device)
        t = time.perf_counter()
        editor.apply(model, tok, reqs[:1]).restore(model)
        sync(args.device)
        return time.perf_counter() - t

    for spec in args.editors.split(","):
        warm = first_edit_seconds(spec)  # the first time on this cache
        again = first_edit_seconds(spec)  # a new editor instance (a new process): everything read from disk
        editor = make_editor(spec, key, {"stats_corpus": "bundled", "stats_n_samples": args.stats_samples,
                                         "quiet": True})
        per = []
        reset_peak_memory(device)
        t = time.perf_counter()
        for r in reqs[1:]:
            res = editor.apply(model, tok, [r])
            sync(args.device)
            res.restore(model)
            per.append(dict(res.timings, steps=res.info["vstar_steps"][0]))
        sync(args.device)
        total = time.perf_counter() - t
        med = {k: statistics.median(p[k] for p in per) for k in per[0]}
        peak = peak_memory_mb(device)  # torch.cuda.max_memory_allocated over the timed edits (weights included)
        print(f"{spec:8} {warm:9.2f} {again:7.2f} {len(per) / total:8.3f} {total / len(per):7.3f} {med['keys']:6.3f} "
              f"{med['vstar']:6.3f} {med['solve']:6.3f} {med['steps']:5.0f} {peak if peak is not None else '-':>9}")


if __name__ == "__main__":
    main()
