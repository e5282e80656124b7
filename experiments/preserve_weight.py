"""How much a -C variant's preserved keys can be kept, as a function of their weight w, without running v*.

For one edit with key k and preserved keys K_p, ROME-C writes Δ = r gᵀ / (gᵀk) with g = (λC + w K_p K_pᵀ)⁻¹ k, and
MEMIT-C (one layer) Δ = r gᵀ with g = (λC + kkᵀ + w K_p K_pᵀ)⁻¹ k. Both are rank one along the residual r, so the
ratios below do not depend on v*:
  keep   = mean over preserved keys of |gᵀk_p| / |gᵀk|   (their output change relative to the edit key's; w = 0: plain)
  share  = gᵀk                                          (MEMIT-C: the share of r written at k*; ROME-C: 1)
  cost   = ‖Δ‖_C / ‖Δ‖_C(w=0), ‖Δ‖_C² = tr(Δ C Δᵀ)       (the change over the statistics corpus's keys)
  cos    = median cosine of k* and its preserved keys (a key equal to k* cannot be kept while k* is edited);
  same   = the share of preserved keys equal to k* (cosine > 0.9999: the edit and the preserved prompt both begin
           with the subject, so the tokens up to its last one, hence the key, are the same);
  keep≠  = the median keep over the preserved keys that differ from k*.

python experiments/preserve_weight.py --data leaderboards/data/fineked --start 300 --n 30
"""
from __future__ import annotations

import argparse
import statistics

import torch

from editors.adapters import adapter_for
from editors.locate.keys import compute_keys, preserved_keys
from editors.models import load_model
from editors.registry import make_editor
from harness.datasets import load_dataset
from harness.runner import edit_request


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="leaderboards/data/fineked")
    p.add_argument("--start", type=int, default=300, help="first case of --split all (300: outside the leaderboard)")
    p.add_argument("--n", type=int, default=30)
    p.add_argument("--weights", default="0,1,10,100,1000,15000,150000,1500000")
    p.add_argument("--editors", default="rome_c,memit_c")
    args = p.parse_args()
    model, tok = load_model("smollm2-135m")
    ad = adapter_for(model)
    records = load_dataset(args.data, "all").records[args.start:args.start + args.n]
    reqs = [edit_request(r) for r in records if r.constraint_facts]
    ws = [float(w) for w in args.weights.split(",")]
    print(f"{len(reqs)} edits (cases {args.start}..{args.start + args.n - 1} of --split all with preserved facts)\n")
    print("| editor | layer | λ | w | keep (median) | keep≠ (median) | share (median) | cost ‖Δ‖_C (median) | "
          "cos(k*, k_p) | same |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for spec in args.editors.split(","):
        ed = make_editor(spec, "smollm2-135m")
        layer = ed.edit_layers(model, ad)[-1]
        lam = ed.hparams.mom2_update_weight
        C = ed.second_moments(model, tok, ad, [layer])[layer].double()
        prefixes = ed.prefixes(model, tok)
        rows = {w: ([], [], [], []) for w in ws}
        coss = []
        for req in reqs:
            k = compute_keys(model, tok, ad, layer, [req], prefixes)[0].double()
            Kp = preserved_keys(model, tok, ad, layer, [req], prefixes).double().T  # (d_in, m)
            cos = [float(k @ Kp[:, j] / (k.norm() * Kp[:, j].norm())) for j in range(Kp.shape[1])]
            coss += cos
            other = [j for j, c in enumerate(cos) if c <= 0.9999]
            base = None
            for w in ws:
                A = lam * C + w * Kp @ Kp.T + (0 if spec == "rome_c" else torch.outer(k, k))
                g = torch.linalg.solve(A, k)
                scale = 1 / float(g @ k) if spec == "rome_c" else 1.0  # ROME-C writes r exactly at k
                keep = float((g @ Kp).abs().mean() / (g @ k).abs())
                cost = scale * float(torch.sqrt(g @ C @ g))
                base = cost if base is None else base
                rows[w][0].append(keep)
                rows[w][1].append(scale * float(g @ k))
                rows[w][2].append(cost / base)
                rows[w][3] += [float((g @ Kp[:, j]).abs() / (g @ k).abs()) for j in other]
        same = sum(c > 0.9999 for c in coss) / len(coss)
        for w in ws:
            keep, share, cost = (statistics.median(x) for x in rows[w][:3])
            other = f"{statistics.median(rows[w][3]):.3f}" if rows[w][3] else "-"
            print(f"| {spec} | {layer} | {lam:g} | {w:g} | {keep:.3f} | {other} | {share:.3f} | {cost:.2f} | "
                  f"{statistics.median(coss):.3f} | {100 * same:.0f} % of {len(coss)} |")


if __name__ == "__main__":
    main()
