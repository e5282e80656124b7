#!/usr/bin/env python3
"""Every weight change and diagnostic of the locate-and-edit editors on the three tiny families, for checking that a
refactor leaves them bit-identical.

    PYTHONPATH=OLD_CHECKOUT python scripts/edit_snapshot.py snapshot /tmp/before.pt
    PYTHONPATH=NEW_CHECKOUT python scripts/edit_snapshot.py snapshot /tmp/after.pt
    python scripts/edit_snapshot.py compare /tmp/before.pt /tmp/after.pt

ROME, ROME-C, MEMIT (default range and three layers), MEMIT-C, AlphaEdit (a real C and the identity; a second batch
sees the first's keys) and DiKE with every flag that changes its path (a fixed random KRD), each on one edit and a
batch of two. One CPU thread, so the reduction order is the same in both runs.
"""
from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path
from typing import Any

import torch

PRESERVE = ("The official religion of France is", "Christianity")
REQUESTS = [("c1", "The capital of France is", "France", "Berlin", "Paris"),
            ("c2", "France is located in the continent of", "France", "Asia", "Europe")]
FAST = dict(context_prefixes=[[3, 2]], v_num_grad_steps=6, quiet=True, stats_n_samples=40, stats_max_len=32)
IDENTITY = dict(stats_corpus="identity", mom2_update_weight=1.0)
LOCATE = [("rome", {}), ("rome_c", {"preserve_weight": 100.0}), ("memit", {}), ("memit", {"layers": [0, 1, 2]}),
          ("memit_c", {}), ("alphaedit", {}), ("alphaedit", {"stats_corpus": "identity"})]
DIKE = [("dike", IDENTITY), ("dike", {}), ("dike[no_fik]", IDENTITY), ("dike[no_tke]", IDENTITY),
        ("dike[no_tke,no_fik]", IDENTITY), ("dike[no_tke,no_fik]", {**IDENTITY, "through_shrink": False}),
        ("dike", {**IDENTITY, "clamp_on": "z_r", "through_shrink": False}),
        ("dike", {**IDENTITY, "keep_recon_residual": False, "kl_reference": "substituted"}),
        ("dike", {**IDENTITY, "keep_recon_residual": False})]


def plain(x: Any) -> Any:
    """NaN != NaN: diagnostics compare as text where they are NaN."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    return "nan" if isinstance(x, float) and math.isnan(x) else x


def snapshot(out: Path, only: str | None = None, families: tuple[str, ...] = ("gpt2", "gptj", "llama")) -> None:
    from editors.base import EditRequest, PreservedFact
    from editors.dike.checkpoint import save_krd
    from editors.dike.krd import KRD, KRDConfig
    from editors.locate.fingerprint import model_fingerprint
    from editors.registry import make_editor
    from editors.tiny import tiny_model_and_tokenizer

    torch.set_num_threads(1)
    requests = [EditRequest(*r, preserve=(PreservedFact(*PRESERVE),)) for r in REQUESTS]
    krd_dir = Path(tempfile.mkdtemp())
    found: dict[str, Any] = {}
    for family in families:
        model, tok = tiny_model_and_tokenizer(family)
        torch.manual_seed(0)
        save_krd(krd_dir / family, KRD(KRDConfig(d=model.config.hidden_size)),
                 {"model_fingerprint": model_fingerprint(model), "layer": 1, "repr_layer": 2})
        dike = {"layers": [1], "repr_layer": 2, "krd_path": str(krd_dir / family)}
        runs = [(s, o, (1, 2, 2)) for s, o in LOCATE] + [(s, {**dike, **o}, (1, 2)) for s, o in DIKE]
        for i, (spec, overrides, sizes) in enumerate(runs):
            if only and not spec.startswith(only):
                continue
            editor = make_editor(spec, "tiny", {**FAST, **overrides})
            for j, n in enumerate(sizes):
                w0 = {k: v.detach().clone() for k, v in model.named_parameters()}
                result = editor.apply(model, tok, requests[:n])
                key = f"{family}/{i}:{spec}/{j}"
                found[f"{key}/delta"] = {k: v.detach() - w0[k] for k, v in model.named_parameters()
                                         if not torch.equal(v, w0[k])}
                found[f"{key}/info"] = plain({k: v for k, v in result.info.items() if k != "krd"})
                result.restore(model)
    torch.save(found, out)
    print(f"{len(found)} entries -> {out}")


def same(x: Any, y: Any) -> bool:
    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return isinstance(y, (list, tuple)) and len(x) == len(y) and all(same(u, v) for u, v in zip(x, y))
    return x == y


def compare(a_path: Path, b_path: Path) -> int:
    a, b = torch.load(a_path), torch.load(b_path)
    differ = sorted(k for k in a.keys() | b.keys() if k not in a or k not in b or not same(a[k], b[k]))
    changed = sum(1 for k, v in a.items() if k.endswith("/delta") and any(t.abs().sum() > 0 for t in v.values()))
    print(f"{len(a)} entries ({changed} edits that changed weights), {len(differ)} differ" +
          "".join(f"\n  {k}" for k in differ))
    return 1 if differ else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("snapshot")
    s.add_argument("out", type=Path)
    s.add_argument("--only", help="only the editor specs that start with this (e.g. dike)")
    s.add_argument("--family", action="append", choices=("gpt2", "gptj", "llama"), help="only this tiny family")
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = p.parse_args()
    if args.cmd == "snapshot":
        snapshot(args.out, args.only, tuple(args.family or ("gpt2", "gptj", "llama")))
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    raise SystemExit(main())
