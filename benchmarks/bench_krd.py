"""KRD training cost on a real model, printed as a table: seconds for caching (h_s, h_r), a training step with a
full LLM pass per L_con row (no state cache), the first step with the state cache (the blocks up to l run once and
are kept), a later step (only the blocks after l run), and the projected time of a run.
Target (issue 13): 20,000 samples in < 60 min on the 2-core CPU, < 5 min on a GPU.
On a CPU shared with other jobs the wall time says little, so each phase also reports this process's CPU time
(time.process_time): with one thread that is the wall time the phase would take on an idle core.

    python benchmarks/bench_krd.py --model smollm2-135m --data out/fineked --samples 128 [--device cuda]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    from harness.commands import add_placement_args
    add_placement_args(ap)
    ap.add_argument("--data", default="out/fineked")
    ap.add_argument("--samples", type=int, default=128, help="samples to time on (whole batches)")
    ap.add_argument("--siblings", type=int, default=10, help="|N| cap, as in training")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--llm-batch", type=int, default=32)
    ap.add_argument("--target-samples", type=int, default=20000, help="project a run on this many samples")
    ap.add_argument("--epochs", type=int, default=2, help="epochs of the projected run")
    args = ap.parse_args()

    from editors.adapters import adapter_for
    from editors.dike.editor import DikeEditor
    from editors.dike.krd import KRD, KRDConfig
    from editors.dike.states import PrefixCache
    from editors.dike.train import KRDTrainConfig, batch_step, cached_states, constraint_rows
    from fineked.export import load_krd_train
    from harness.commands import load_named_model
    from harness.krd_cli import records_to_samples

    model, tok, key = load_named_model(args.model, args.device, args.dtype)
    device = next(model.parameters()).device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    ad = adapter_for(model)
    hp = DikeEditor.from_config(key, {}).hparams
    n = ad.n_layers(model)
    layer = hp.layers[-1] if hp.layers else ad.default_edit_layer(n)
    l_r = hp.repr_layer if hp.repr_layer is not None else ad.default_repr_layer(n)
    samples = records_to_samples(load_krd_train(args.data), args.samples)
    cfg = KRDTrainConfig(layer=layer, repr_layer=l_r, siblings=args.siblings, batch_size=args.batch_size,
                         llm_batch=args.llm_batch)
    rows_per_sample = len(constraint_rows(samples, args.siblings, 0)) / len(samples)
    B = args.batch_size
    t, c = time.perf_counter(), time.process_time()
    h_s, h_r = (x.to(device) for x in cached_states(model, tok, ad, cfg, samples, None))
    sync()
    cache_per = ((time.perf_counter() - t) / len(samples), (time.process_time() - c) / len(samples))
    krd = KRD(KRDConfig(d=h_s.shape[1])).to(device)
    opt = torch.optim.AdamW(krd.parameters(), lr=1e-3)

    def per_sample(prefix: PrefixCache | None) -> tuple[float, float]:
        """(wall, CPU) seconds per sample of a training step, medians over the batches."""
        ts, cs = [], []
        for b in range(0, len(samples) - B + 1, B):
            sel = list(range(b, b + B))
            t, c = time.perf_counter(), time.process_time()
            opt.zero_grad()
            batch_step(model, tok, ad, krd, cfg, [samples[i] for i in sel], h_s[sel], h_r[sel], train=True,
                       prefix=prefix)
            opt.step()
            sync()
            ts.append((time.perf_counter() - t) / B)
            cs.append((time.process_time() - c) / B)
        return statistics.median(ts), statistics.median(cs)

    live = per_sample(None)
    prefix = PrefixCache(model, ad, layer)
    first = per_sample(prefix)  # fills the cache
    later = per_sample(prefix)  # every row cached
    N, E = args.target_samples, args.epochs
    rows = [("cache h_s, h_r (once)", cache_per),
            ("train step, full LLM pass per row", live),
            ("train step, state cache: first epoch", first),
            ("train step, state cache: later epochs", later)]
    print(f"model {args.model} on {device}, l={layer}, l_r={l_r}, |N| ≤ {args.siblings} "
          f"({rows_per_sample:.2f} L_con rows/sample), batch {B}, threads {torch.get_num_threads()}, "
          f"timed on {len(samples)} samples")
    print(f"{'phase':<44} {'wall s/sample':>13} {'CPU s/sample':>13} {f'wall min/{N:,}':>13} {f'CPU min/{N:,}':>13}")
    for name, (wall, cpu) in rows:
        print(f"{name:<44} {wall:>13.4f} {cpu:>13.4f} {wall * N / 60:>13.1f} {cpu * N / 60:>13.1f}")
    for k, label in ((0, "wall"), (1, "CPU")):
        no_cache = N * (cache_per[k] + E * live[k]) / 60
        cached = N * (cache_per[k] + first[k] + (E - 1) * later[k]) / 60
        print(f"projected run of {N:,} samples, {E} epochs ({label} min): {no_cache:.1f} without the state cache, "
              f"{cached:.1f} with it")


if __name__ == "__main__":
    main()
