"""KRD training cost on a real model: seconds for caching (h_s, h_r), one L_con LLM chunk, one KRD-only step,
and a projected epoch, printed as a table. Target (issue 5): 5,000 samples trained in < 20 min on a 2-core CPU.

    python benchmarks/bench_krd.py --model smollm2-135m --data out/fineked --samples 256
"""
from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    from harness.commands import add_placement_args
    add_placement_args(ap)
    ap.add_argument("--data", default="out/fineked")
    ap.add_argument("--samples", type=int, default=256, help="samples to time on")
    ap.add_argument("--siblings", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--llm-batch", type=int, default=32)
    ap.add_argument("--target-samples", type=int, default=5000, help="project an epoch of this many samples")
    args = ap.parse_args()

    from editors.adapters import adapter_for
    from editors.dike.editor import DikeEditor
    from editors.dike.krd import KRD, KRDConfig
    from editors.dike.train import KRDTrainConfig, batch_step, cached_states
    from fineked.export import load_krd_train
    from harness.commands import load_named_model
    from harness.krd_cli import records_to_samples

    model, tok, key = load_named_model(args.model, args.device, args.dtype)
    ad = adapter_for(model)
    hp = DikeEditor.from_config(key, {}).hparams
    n = ad.n_layers(model)
    layer = hp.layers[-1] if hp.layers else ad.default_edit_layer(n)
    l_r = hp.repr_layer if hp.repr_layer is not None else ad.default_repr_layer(n)
    samples = records_to_samples(load_krd_train(args.data), args.samples)
    cfg = KRDTrainConfig(layer=layer, repr_layer=l_r, siblings=args.siblings, batch_size=args.batch_size,
                         llm_batch=args.llm_batch)
    rows = []
    t = time.perf_counter()
    h_s, h_r = cached_states(model, tok, ad, cfg, samples, None)
    cache_s = time.perf_counter() - t
    rows.append(("cache h_s, h_r", cache_s, cache_s / len(samples)))
    krd = KRD(KRDConfig(d=h_s.shape[1]))
    opt = torch.optim.AdamW(krd.parameters(), lr=1e-3)
    B = args.batch_size
    times = {"full": [], "no_kc": []}
    for variant in ("no_kc", "full"):
        c = KRDTrainConfig(**{**cfg.__dict__, "no_kc": variant == "no_kc"})
        for b in range(0, min(len(samples), 4 * B), B):
            sel = list(range(b, min(b + B, len(samples))))
            t = time.perf_counter()
            opt.zero_grad()
            batch_step(model, tok, ad, krd, c, [samples[i] for i in sel], h_s[sel], h_r[sel], train=True)
            opt.step()
            times[variant].append((time.perf_counter() - t) / len(sel))
    for variant, ts in times.items():
        per = sorted(ts)[len(ts) // 2]
        rows.append((f"train step ({variant}), per sample", per * B, per))
    per_full = sorted(times["full"])[len(times["full"]) // 2]
    epoch = args.target_samples * (per_full + cache_s / len(samples))
    rows.append((f"projected: cache + 1 epoch of {args.target_samples}", epoch, epoch / args.target_samples))
    print(f"model {args.model}, l={layer}, l_r={l_r}, |N|={args.siblings}, batch {B}, threads {torch.get_num_threads()}")
    print(f"{'phase':<44} {'seconds':>9} {'s/sample':>9}")
    for name, s, per in rows:
        print(f"{name:<44} {s:>9.2f} {per:>9.4f}")


if __name__ == "__main__":
    main()
