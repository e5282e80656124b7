"""Batched teacher-forced scorer against its floor and against one forward pass per prompt (SmolLM2, CounterFact sample).

Every case contributes its evaluation pairs (edit prompt with o* and o, paraphrases, neighbourhood
prompts with o* and o), as a real run scores them. The floor is the bare padded forward passes over the very
same batches (same tokens, same padding, no scoring logic); the scorer's target is <= 1.3x the floor. The
one-pass-per-prompt row shows what batching saves, which says more about per-call overhead than the scorer.

    python benchmarks/bench_eval.py [--cases 200] [--batch-size 32] [--threads 2] [--repeats 3]
"""
from __future__ import annotations

import argparse
import time

import torch

from harness.commands import add_placement_args, load_named_model
from editors.text import encode_pair, pad_id_of
from fineked.counterfact import load_counterfact
from harness.scoring import forward_padded, length_sorted_batches, score_pairs


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


@torch.no_grad()
def bare_forward(model, tok, pairs, batch_size: int) -> None:
    """The floor: the scorer's padded forward passes over the same batches, and nothing else."""
    encoded = [encode_pair(tok, p, t) for p, t in pairs]
    for _, batch in length_sorted_batches(encoded, batch_size, pad_id_of(tok)):
        forward_padded(model, batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="floor and scorer: best of this many interleaved runs")
    ap.add_argument("--model", default="smollm2-135m")
    add_placement_args(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, _ = load_named_model(args.model, args.device, args.dtype)
    pairs = case_pairs(load_counterfact(None, args.cases))
    score_pairs(model, tok, pairs[:8])  # warm-up

    t_floor = t_batched = float("inf")
    for _ in range(args.repeats):  # interleaved, best of n: a busy machine slows single runs, not the best one
        t0 = time.perf_counter()
        bare_forward(model, tok, pairs, args.batch_size)
        t_floor = min(t_floor, time.perf_counter() - t0)
        t0 = time.perf_counter()
        batched = score_pairs(model, tok, pairs, batch_size=args.batch_size)
        t_batched = min(t_batched, time.perf_counter() - t0)
    t0 = time.perf_counter()
    single = one_at_a_time(model, tok, pairs)
    t_single = time.perf_counter() - t0

    worst = max(abs(sum(b.logprobs) - s) for b, s in zip(batched, single))
    rows = [("one forward pass per prompt", t_single), (f"floor: bare padded forward (batch {args.batch_size})", t_floor),
            (f"batched scorer (batch {args.batch_size})", t_batched)]
    print(f"{args.model} ({args.dtype}, {model.device}), {args.cases} CounterFact cases, {len(pairs)} (prompt, target) pairs, "
          f"{args.threads} threads")
    print(f"| {'method':<42} | {'seconds':>8} | {'prompts/s':>9} |")
    print(f"|{'-' * 44}|{'-' * 10}|{'-' * 11}|")
    for name, t in rows:
        print(f"| {name:<42} | {t:8.2f} | {len(pairs) / t:9.1f} |")
    print(f"scorer / floor: {t_batched / t_floor:.2f}x (target <= 1.3)   one-per-prompt / scorer: "
          f"{t_single / t_batched:.1f}x   max |log-prob difference|: {worst:.2e}")


if __name__ == "__main__":
    main()
