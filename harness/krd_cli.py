"""`fineked train-krd`: train DiKE's KRD module once per model on FINE-KED's krd_train configuration.

The checkpoint lands where the `dike` editor looks for it (editors.dike.checkpoint.checkpoint_dir), keyed by the
model's fingerprint, the layers and the loss variant; an interrupted run resumes when rerun with the same inputs.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import random
from pathlib import Path
from typing import Any, Sequence

from common.args import given, number
from harness.commands import add_placement_args
from harness.errors import UserError

log = logging.getLogger(__name__)


def records_to_samples(records: Sequence[Any], limit: int | None = None, seed: int = 0) -> list[Any]:
    """krd_train EditRecords -> KRDSamples: p(s, r) -> o (the true object), siblings = the subject's other facts."""
    from editors.dike.train import KRDSample

    samples = [KRDSample(prompt=r.prompt, subject=r.subject, target=r.target_true.str,
                         siblings=tuple((f.prompt, f.target.str) for f in r.fine_grained))
               for r in records if r.subject in r.prompt]
    if limit is not None and limit < len(samples):
        samples = random.Random(seed).sample(samples, limit)
    if not any(s.siblings for s in samples):
        raise UserError("the krd_train records carry no sibling facts (fine_grained); rebuild with `fineked build`")
    return samples


def train_config(args: argparse.Namespace, layer: int, repr_layer: int) -> Any:
    """The KRDTrainConfig of the flags: a flag left out takes the dataclass's default, which lives only there."""
    from editors.dike.train import KRDTrainConfig

    return KRDTrainConfig(layer=layer, repr_layer=repr_layer, no_ctr=args.no_ctr, no_kc=args.no_kc,
                          cache_states=not args.no_cache_states,
                          **given(args, tau="tau", alpha="alpha", beta="beta", siblings="siblings",
                                  batch_size="batch_size", llm_batch="llm_batch", con_per_batch="con_per_batch",
                                  epochs="epochs", lr="lr", init="init", val_fraction="val_fraction",
                                  patience="patience", warmup_epochs="warmup_epochs", seed="seed"))


def cmd_train_krd(args: argparse.Namespace) -> int:
    import torch

    from editors.adapters import adapter_for
    from editors.dike.checkpoint import checkpoint_dir, load_resume_state, save_krd, save_resume_state
    from editors.dike.diagnostics import diagnose, format_premise, plot_curves, premise_metrics
    from editors.dike.editor import DikeEditor
    from editors.dike.train import cached_states, data_fingerprint, default_state_cache, train_krd
    from editors.locate.fingerprint import model_fingerprint
    from fineked.export import load_krd_train
    from harness.commands import load_named_model

    if args.threads:
        torch.set_num_threads(args.threads)
    seed = train_config(args, 0, 0).seed  # before the model loads: a tiny or random model draws from the RNG
    torch.manual_seed(seed)
    model, tok, key = load_named_model(args.model, args.device, args.dtype)
    adapter = adapter_for(model)
    hp = DikeEditor.from_config(key, {}).hparams
    n_layers = adapter.n_layers(model)
    layer = args.layer if args.layer is not None else (hp.layers[-1] if hp.layers else adapter.default_edit_layer(n_layers))
    l_r = args.repr_layer if args.repr_layer is not None else (
        hp.repr_layer if hp.repr_layer is not None else adapter.default_repr_layer(n_layers))
    if not (0 <= layer < n_layers and 0 <= l_r < n_layers):
        raise UserError(f"layers l={layer}, l_r={l_r} out of range for a {n_layers}-layer model")
    samples = records_to_samples(load_krd_train(args.data), args.samples, seed)
    cfg = train_config(args, layer, l_r)
    fp = model_fingerprint(model)
    out = Path(args.out) if args.out else checkpoint_dir(fp, layer, l_r, cfg.variant)
    train_cfg = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("epochs", "patience", "cache_states")}
    meta = {"model": args.model, "model_fingerprint": fp, "layer": layer, "repr_layer": l_r,
            "data": str(args.data), "data_fingerprint": data_fingerprint(samples), "n_samples": len(samples),
            "train_config": train_cfg, "losses": {"tau": cfg.tau, "alpha": cfg.alpha, "beta": cfg.beta,
                                                  "ctr": not cfg.no_ctr, "kc": not cfg.no_kc}}
    resume = None if args.fresh else load_resume_state(out, meta)
    state_cache = default_state_cache(model, cfg, samples)

    def on_epoch(result: Any, state: dict) -> None:
        save_resume_state(out, state, meta)

    res = train_krd(model, tok, adapter, samples, cfg, state_cache=state_cache, resume=resume, on_epoch=on_epoch,
                    quiet=args.quiet)
    h_s, h_r = cached_states(model, tok, adapter, cfg, samples, state_cache)
    val = res.val_indices
    device = next(model.parameters()).device
    diag = diagnose(res.krd.cpu(), h_s[val], h_r[val], out)
    premise = premise_metrics(model, tok, adapter, res.krd.to(device), layer, [samples[i] for i in val],
                              h_s[val].to(device), h_r[val].to(device), siblings=cfg.siblings, seed=cfg.seed,
                              llm_batch=cfg.llm_batch, prefix=res.prefix)
    res.krd.cpu()
    last = res.history["epochs"][-1] if res.history["epochs"] else {}
    meta.update(metrics={"silhouette": diag.silhouette, "silhouette_metric": diag.metric, "silhouette_n": diag.n,
                         "best_val_total": res.best_val, "final": last, "premise": premise},
                epochs_run=res.epochs_run, stopped_early=res.stopped_early, train_seconds=round(res.seconds, 1),
                curves=res.history)
    save_krd(out, res.krd, meta)
    plot_curves(res.history, out / "curves.png")
    print(f"KRD for {args.model} (l={layer}, l_r={l_r}, {cfg.variant}) -> {out}")
    print(f"  samples {len(samples)} (val {len(val)}), epochs {res.epochs_run}, {res.seconds:.0f} s; "
          f"val: ctr {last.get('val', {}).get('ctr', float('nan')):.3f} con_r {last.get('val', {}).get('con_r', float('nan')):.3f} "
          f"con_u {last.get('val', {}).get('con_u', float('nan')):.3f} rec {last.get('val', {}).get('rec', float('nan')):.4f}; "
          f"silhouette ({diag.metric}) {diag.silhouette:.3f}; t-SNE {diag.png}")
    print(format_premise(premise))
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("train-krd", help="train DiKE's KRD disentangler for a model (once; resumable)",
                       description="Training flags left out take KRDTrainConfig's defaults "
                                   "(editors/dike/train.py; README, 'The committed KRD').")
    p.add_argument("--model", required=True, help="smollm2-135m, a hub id, a local folder, tiny:FAMILY or random:NAME")
    add_placement_args(p)
    p.add_argument("--data", default="out/fineked", help="a FINE-KED build (krd_train) or hub id (default: %(default)s)")
    p.add_argument("--samples", type=number(int, 2), default=20000,
                   help="use this many krd_train records (default: %(default)s, METHOD.md §5.1; fewer if the build "
                        "has fewer)")
    p.add_argument("--siblings", type=number(int, 1, 10),
                   help="|N|: at most this many sibling facts per sample in L_con, 1-10")
    p.add_argument("--epochs", type=number(int, 0))
    p.add_argument("--warmup-epochs", type=number(int, 0),
                   help="epochs of L_ctr + L_rec alone on the cached states first (seconds each; 0: off)")
    p.add_argument("--batch-size", type=number(int, 2))
    p.add_argument("--llm-batch", type=number(int, 1), help="rows per live LLM pass in L_con")
    p.add_argument("--con-per-batch", type=number(int, 0),
                   help="samples per batch whose L_con is computed (a random subset; 0: all). The LLM passes dominate "
                        "the cost, so this trades L_con variance for time")
    p.add_argument("--lr", type=number(float, 0), help="AdamW learning rate (README, 'The committed KRD')")
    p.add_argument("--tau", type=number(float, 1e-6), help="InfoNCE temperature")
    p.add_argument("--alpha", type=number(float, 0), help="weight of L_con")
    p.add_argument("--beta", type=number(float, 0),
                   help="weight of L_rec = ‖h_s − ĥ_s‖² (README, 'The committed KRD')")
    p.add_argument("--init", choices=("random", "split"),
                   help="KRD initialisation; split: ĥ_s = h_s exactly at the start (KRD.split_init)")
    p.add_argument("--no-ctr", action="store_true", help="ablation: no contrastive loss")
    p.add_argument("--no-kc", action="store_true", help="ablation: no knowledge-constraint loss")
    p.add_argument("--layer", type=number(int, 0), default=None, help="l (default: dike's YAML for the model)")
    p.add_argument("--repr-layer", type=number(int, 0), default=None, help="l_r (default: dike's YAML for the model)")
    p.add_argument("--val-fraction", type=number(float, 0, 0.9))
    p.add_argument("--patience", type=number(int, 1))
    p.add_argument("--seed", type=number(int, 0))
    p.add_argument("--out", default=None, help="checkpoint folder (default: the cache folder dike reads)")
    p.add_argument("--fresh", action="store_true", help="ignore a saved training state")
    p.add_argument("--threads", type=number(int, 0), default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--no-cache-states", action="store_true",
                   help="run the full model in every L_con pass instead of caching the states after block l")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train_krd)
