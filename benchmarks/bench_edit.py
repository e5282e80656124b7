"""Edit speed and efficacy of the locate-and-edit editors on SmolLM2 (CPU), against the optimisation floor.

For each editor and each CounterFact case (the bundled sample, or --counterfact): edit, score, restore. Prints per
editor the median seconds per edit with its breakdown (keys, v* optimisation, statistics, solve, one evaluation),
the floor (the same number of forward and backward passes on the same v* batch, done bare: one plain hook adding a
leaf vector at the same site, no editor code), their ratio (target <= 1.3), and ES/PS/NS (probability protocol:
mean token NLL of o* vs o). Run twice: the second run must show stats = 0 (cached statistics).

    python benchmarks/bench_edit.py [--editors rome,memit,alphaedit] [--cases 10] [--model smollm2-135m]
                                    [--device cpu|cuda|cuda:N] [--dtype float32|bfloat16|float16]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from editors.adapters import adapter_for
from editors.base import EditRequest
from editors.placement import model_placement
from editors.registry import make_editor
from harness.commands import add_placement_args, load_named_model
from editors.locate.vstar import build_batch
from fineked.counterfact import raw_records


@torch.no_grad()
def target_nll(model, tok, prompts: list[str], targets: list[str]) -> torch.Tensor:
    """Mean token NLL of ' target' after each prompt, one right-padded batch."""
    texts = [p + " " + t for p, t in zip(prompts, targets)]
    tok.padding_side = "right"
    enc = tok(texts, return_tensors="pt", padding=True, return_offsets_mapping=True)
    offs = enc.pop("offset_mapping")
    logp = model(**enc.to(model_placement(model)[0])).logits[:, :-1].float().log_softmax(-1).cpu()
    nll = -logp.gather(-1, enc["input_ids"][:, 1:, None])[..., 0]
    mask = torch.stack([(offs[i, 1:, 0] >= len(p)) & (enc["attention_mask"][i, 1:] == 1) & (offs[i, 1:, 1] > offs[i, 1:, 0])
                        for i, p in enumerate(prompts)]).float()
    return (nll * mask).sum(1) / mask.sum(1)


def evaluate(model, tok, rec) -> dict[str, bool]:
    prompts = [rec["prompt"], rec["rephrase_prompt"], rec["locality_prompt"]]
    new = target_nll(model, tok, prompts, [rec["target_new"]] * 3)
    true = target_nll(model, tok, prompts, [rec["ground_truth"], rec["ground_truth"], rec["locality_ground_truth"]])
    return {"ES": bool(new[0] < true[0]), "PS": bool(new[1] < true[1]), "NS": bool(true[2] < new[2])}


def floor_seconds(model, tok, req, prefixes, layer: int, site: str, n_fwd: int, n_bwd: int) -> float:
    """Time of n_fwd forward and n_bwd backward passes on req's v* batch with a bare leaf hook."""
    adapter = adapter_for(model)
    device = model_placement(model)[0]
    # as v* does: the prefix KV cache on CPU only (VStarConfig.cache_prefixes)
    batch = build_batch(tok, req, prefixes, "{} is a", device, cache_model=model if device.type == "cpu" else None)
    path = adapter.ffn_out_module_name(layer) if site == "ffn_output" else adapter.block_path(layer)
    delta = torch.zeros(model.config.hidden_size, requires_grad=True, device=device)
    rows = torch.arange(len(batch.subject_positions), device=device)
    cols = torch.tensor(batch.subject_positions, device=device)

    def hook(mod, args, out):
        return out.index_put((rows, cols), out[rows, cols] + delta.to(out.dtype))

    h = model.get_submodule(path).register_forward_hook(hook)
    t0 = time.perf_counter()
    for i in range(n_fwd):
        logits = model(**batch.model_inputs(model), use_cache=False, logits_to_keep=batch.logit_positions).logits
        loss = -(logits[: batch.n_rewrite].log_softmax(-1).gather(-1, batch.target_ids[..., None])[..., 0]
                 * batch.target_mask).sum()
        if i < n_bwd:
            loss.backward()
    h.remove()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--editors", default="rome,memit,alphaedit")
    ap.add_argument("--cases", type=int, default=10)
    ap.add_argument("--offset", type=int, default=0, help="first CounterFact record to use")
    ap.add_argument("--counterfact", default=None,
                    help="CounterFact records (EasyEdit JSON/JSONL path, URL or hub id); default: the bundled sample")
    ap.add_argument("--model", default="smollm2-135m")
    add_placement_args(ap)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--set", action="append", default=[], help="hparam override k=v (all editors)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from editors.hparams import parse_overrides

    try:
        records = raw_records(args.counterfact)[args.offset:args.offset + args.cases]
    except FileNotFoundError as exc:
        raise SystemExit(f"bench_edit: {exc}") from None
    model, tok, key = load_named_model(args.model, args.device, args.dtype)
    header = (f"{'editor':10} {'edit s':>7} {'keys':>6} {'v*':>6} {'stats':>6} {'solve':>6} {'eval':>6} "
              f"{'floor':>6} {'ratio':>6} {'steps':>5} {'ES':>5} {'PS':>5} {'NS':>5}")
    print(f"{args.model} ({args.dtype}, {model_placement(model)[0]}), {len(records)} CounterFact cases (records {args.offset}..), torch threads "
          f"{torch.get_num_threads()}; seconds are medians per edit\n{header}", flush=True)
    base = [evaluate(model, tok, r) for r in records]
    acc = {m: sum(b[m] for b in base) / len(base) for m in ("ES", "PS", "NS")}
    print(f"{'unedited':10} {'':>7} {'':>6} {'':>6} {'':>6} {'':>6} {'':>6} {'':>6} {'':>6} {'':>5} "
          f"{acc['ES']:5.2f} {acc['PS']:5.2f} {acc['NS']:5.2f}", flush=True)
    for spec in args.editors.split(","):
        editor = make_editor(spec, key, {"quiet": True, **parse_overrides(args.set)})
        per, scores = [], []
        for rec in records:
            req = EditRequest(str(rec["case_id"]), rec["prompt"], rec["subject"], rec["target_new"], rec["ground_truth"])
            t0 = time.perf_counter()
            res = editor.apply(model, tok, [req])
            t_edit = time.perf_counter() - t0
            t1 = time.perf_counter()
            scores.append(evaluate(model, tok, rec))
            t_eval = time.perf_counter() - t1
            res.restore(model)
            layers = res.info["layers"]
            site, layer = ("ffn_output", layers[0]) if spec.startswith("rome") else ("block_output", layers[-1])
            n_fwd = res.info["vstar_steps"][0]
            floor = floor_seconds(model, tok, req, editor.prefixes(model, tok), layer, site, n_fwd, max(n_fwd - 1, 1))
            per.append(dict(res.timings, edit=t_edit, eval=t_eval, floor=floor, steps=n_fwd))
        t = {k: statistics.median(p[k] for p in per) for k in per[0]}
        t["ratio"] = statistics.median(p["edit"] / p["floor"] for p in per)
        acc = {m: sum(s[m] for s in scores) / len(scores) for m in ("ES", "PS", "NS")}
        print(f"{spec:10} {t['edit']:7.2f} {t['keys']:6.2f} {t['vstar']:6.2f} {t['stats']:6.2f} {t['solve']:6.2f} "
              f"{t['eval']:6.2f} {t['floor']:6.2f} {t['ratio']:6.2f} {t['steps']:5.0f} "
              f"{acc['ES']:5.2f} {acc['PS']:5.2f} {acc['NS']:5.2f}", flush=True)

if __name__ == "__main__":
    main()
