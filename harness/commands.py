"""`fineked run`, `fineked report` and `fineked leaderboard`."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from common.args import given, number
from harness.errors import UserError

TINY_PREFIX = "tiny:"  # tiny:gpt2 / tiny:gptj / tiny:llama: random test models, no download
MODEL_HELP = ("smollm2-135m (default), a hub id, a local folder, tiny:gpt2|tiny:gptj|tiny:llama (unit-test size), "
              "or random:gpt2-xl|random:gpt-j-6b|random:llama3-8b (the paper's shapes, seeded random weights)")


def load_named_model(name: str, device: Any = None, dtype: Any = None) -> tuple[Any, Any, str]:
    """(model, tokenizer, hparams key) for a model name, on `device` (None: cuda when available) in `dtype`
    (a name such as "bfloat16" or a torch dtype; None: float32). `tiny:FAMILY` gives a unit-test model,
    `random:NAME` one of the paper's architectures with random weights (editors.random_models)."""
    from editors.placement import parse_device, parse_dtype
    from editors.random_models import RANDOM_PREFIX

    device, dtype = parse_device(device), parse_dtype(dtype)
    if name.startswith(TINY_PREFIX):
        from editors.tiny import TOKENIZER_STYLE, tiny_model_and_tokenizer
        family = name[len(TINY_PREFIX):]
        if family not in TOKENIZER_STYLE:
            raise UserError(f"unknown tiny model {name!r}; use one of "
                            + ", ".join(TINY_PREFIX + f for f in TOKENIZER_STYLE))
        model, tok = tiny_model_and_tokenizer(family)
        return model.to(device=device, dtype=dtype), tok, "tiny"
    if name.startswith(RANDOM_PREFIX):
        from editors.random_models import random_model
        return random_model(name[len(RANDOM_PREFIX):], device, dtype)
    from editors.models import load_model, model_key
    model, tok = load_model(name, device, dtype)
    return model, tok, model_key(name)


def named_model_key(name: str) -> str:
    """The hparams key load_named_model would return, without loading anything."""
    from editors.models import model_key
    from editors.random_models import RANDOM_PREFIX, random_config

    if name.startswith(TINY_PREFIX):
        return "tiny"
    if name.startswith(RANDOM_PREFIX):
        return random_config(name[len(RANDOM_PREFIX):])[1]
    return model_key(name)


def add_placement_args(p: argparse.ArgumentParser) -> None:
    """--device and --dtype, for every command that loads a model (checked by editors.placement when it loads)."""
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    p.add_argument("--dtype", default="float32",
                   help="the model's weights: float32 (default), bfloat16 or float16; solves and statistics "
                        "accumulate in float64/float32 whatever this is")


def default_out(dataset: str, model_key: str, editor: str, mode: str, batch: int) -> Path:
    tag = mode if mode == "single" else f"{mode}{batch}"
    safe = "".join(c if c.isalnum() or c in "-_.[]," else "_" for c in editor)
    return Path("runs") / f"{dataset}__{model_key}__{safe}__{tag}"


def cmd_run(args: argparse.Namespace) -> int:
    import torch

    from editors.hparams import parse_overrides
    from harness.datasets import load_dataset
    from harness.ray_run import check_ray_args
    from harness.rundir import RunDir
    from harness.runner import Run, RunConfig

    check_ray_args(args.mode, args.ray, args.workers)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = RunConfig(model=args.model, editor=args.editor, overrides=parse_overrides(args.set),
                    **given(args, mode="mode", batch_size="batch_size", eval_every="eval_every", seed="seed",
                            gen_tokens="fluency_tokens", score_batch_size="score_batch_size"))
    if args.out:
        RunDir(args.out)  # refuses a file before the model loads
    dataset = load_dataset(args.dataset, args.split)
    if not dataset.records:
        raise UserError(f"dataset {args.dataset!r} has no records")
    if args.ray is None:
        model, tok, key = load_named_model(args.model, args.device, args.dtype)
    else:  # the Ray actors load the model; the driver holds none
        model, tok, key = None, None, named_model_key(args.model)
    from editors.registry import display_name
    name = display_name(args.editor)
    out = Path(args.out) if args.out else default_out(dataset.name, key, name, cfg.mode, cfg.batch_size)
    command = " ".join(shlex.quote(a) for a in ["fineked", *(getattr(args, "argv", None) or sys.argv[1:])])
    run = Run(cfg, dataset, model, tok, out, key, limit=args.limit, quiet=args.quiet,
              check_restore=args.check_restore, command=command, vstar_cache=args.vstar_cache)
    if args.ray is None:
        summary = run.execute()
    else:
        from harness.ray_run import run_on_ray
        summary = run_on_ray(run, args.model, args.device, args.dtype, args.ray, args.workers or 1)
    if not args.quiet:
        from harness.metrics import HEADLINE, tagged
        shown = [m for m in tagged(HEADLINE) if m.name in summary]
        print(f"{out}: " + ", ".join(
            f"{m.name} {summary[m.name]['value'] * (100 if m.percent else 1):.1f}" for m in shown)
            + f" (n={summary[shown[0].name]['n'] if shown else 0})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report import write_report

    out = Path(args.out)
    tables = write_report(args.run_dirs, out, common=args.common_cases)
    for name, md in tables.items():
        print(f"## {name}\n\n{md}")
    print(f"tables and charts in {out}/", file=sys.stderr)
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from harness.report import write_leaderboard

    n = write_leaderboard(args.run_dirs, Path(args.out))
    print(f"{args.out}: {n} rows")
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("run", help="edit -> evaluate -> restore over a dataset (resumable)")
    p.add_argument("--editor", required=True, help="registry name, optionally with flags: ft, rome, dike[no_fik]")
    p.add_argument("--model", default="smollm2-135m", help=MODEL_HELP)
    add_placement_args(p)
    p.add_argument("--dataset", default="counterfact",
                   help="FINE-KED folder or hub id (with --split), counterfact, counterfact:PATH, or FILE.jsonl")
    p.add_argument("--split", choices=["easy", "middle", "hard", "all"],
                   help="FINE-KED level; all: cases with facts at every level, R-Loc reported per level")
    p.add_argument("--mode", choices=["single", "batch", "subject", "sequential"])
    p.add_argument("--batch-size", type=number(int, 1), help="edits per apply() (batch/subject/sequential)")
    p.add_argument("--eval-every", type=number(int, 0), help="sequential: evaluate every N edits (0: only at the end)")
    p.add_argument("--seed", type=number(int, 0))
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override an editor hparam (repeatable)")
    p.add_argument("--limit", type=number(int, 1), help="only the first N cases (a later larger --limit resumes)")
    p.add_argument("--out", help="run directory (default runs/DATASET__MODEL__EDITOR__MODE)")
    p.add_argument("--fluency-tokens", type=number(int, 0),
                   help="greedy tokens generated from each subject for the fluency metric (0: off)")
    p.add_argument("--score-batch-size", type=number(int, 1), help="(prompt, target) pairs per forward pass")
    p.add_argument("--check-restore", action="store_true", help="verify bit-exact restores by tensor hashes")
    p.add_argument("--vstar-cache", type=Path, metavar="DIR",
                   help="reuse v* optimisations across runs (rome, memit, alphaedit, their -C variants, dike and "
                        "its ablations); keyed by the exact weights, request, settings and code, so results are unchanged")
    p.add_argument("--threads", type=number(int, 0), default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="shard the cases over Ray actors (single/batch/subject modes): no ADDRESS starts a local "
                        "Ray, `auto` joins the cluster `ray start` made, or give host:port (pip install '.[ray]')")
    p.add_argument("--workers", type=number(int, 1), default=None,
                   help="with --ray: actors, each with one model replica (a GPU each on GPU machines; default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="Markdown/CSV/LaTeX tables per dataset and R-Loc charts from run dirs")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", default="reports", help="output folder (default reports/)")
    p.add_argument("--common-cases", action="store_true",
                   help="restrict every run to the cases all of them have (compare editors on the same edits)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("leaderboard", help="merge runs into a leaderboard CSV")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", required=True, help="leaderboards/NAME.csv")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_leaderboard)
