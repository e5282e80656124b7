"""Batched teacher-forced scorer vs one forward pass per prompt, on SmolLM2 and the CounterFact sample.

Every case contributes its evaluation pairs (edit prompt with o* and o, paraphrases, neighbourhood
prompts with o* and o), as a real run scores them. Prints prompts/s for both and the ratio.

    python benchmarks/bench_eval.py [--cases 200] [--batch-size 32] [--threads 2]
"""
from __future__ import annotations

import argparse
import time

import torch

from harness.commands import add_placement_args, load_named_model
from editors.text import encode_pair
from fineked.counterfact import load_counterfact
from harness.scoring import score_pairs


def case_pairs(records) -> list[tuple[str, str]]:
    pairs = []
    for r in records:
        for p in (r.prompt, *r.paraphrase_prompts, *r.neighborhood_prompts):
            pairs += [(p, r.target_new.str), (p, r.target_true.str)]
    return pairs


@torch.no_grad()
def one_at_a_time(model, tok, pairs) -> list[float]:
    """The unbatched baseline: one unpadded forward pass per (prompt, target)."""
    out = []
    for prompt, target in pairs:
        p, t = encode_pair(tok, prompt, target)
        ids = torch.tensor([p + t[:-1]])
        logp = torch.log_softmax(model(input_ids=ids.to(model.device)).logits[0].float(), -1).cpu()
        pos = torch.arange(len(p) - 1, len(p) - 1 + len(t))
        out.append(logp[pos, torch.tensor(t)].sum().item())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="smollm2-135m")
    add_placement_args(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, _ = load_named_model(args.model, args.device, args.dtype)
    pairs = case_pairs(load_counterfact(None, args.cases))
    score_pairs(model, tok, pairs[:8])  # warm-up

    t0 = time.perf_counter()
    batched = score_pairs(model, tok, pairs, batch_size=args.batch_size)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = one_at_a_time(model, tok, pairs)
    t_single = time.perf_counter() - t0

    worst = max(abs(sum(b.logprobs) - s) for b, s in zip(batched, single))
    rows = [("one forward pass per prompt", t_single), (f"batched scorer (batch {args.batch_size})", t_batched)]
    print(f"{args.model} ({args.dtype}, {model.device}), {args.cases} CounterFact cases, {len(pairs)} (prompt, target) pairs, "
          f"{args.threads} threads")
    print(f"| {'method':<32} | {'seconds':>8} | {'prompts/s':>9} |")
    print(f"|{'-' * 34}|{'-' * 10}|{'-' * 11}|")
    for name, t in rows:
        print(f"| {name:<32} | {t:8.2f} | {len(pairs) / t:9.1f} |")
    print(f"speed-up: {t_single / t_batched:.1f}x   max |log-prob difference|: {worst:.2e}")


if __name__ == "__main__":
    main()
