"""Writes a FINE-KED split as a .jsonl with the cases that can fill a subject batch of B first.

A subject-consistent batch of B edits is a case plus B - 1 companion edits of its held-out constraint facts; the
runner draws a companion's new object from every record of the dataset, so all records are written, only reordered
(cases with at least B - 1 constraint facts first, each group in split order): `--limit N` then takes N of them.

    python experiments/subject_batch_cases.py out/fineked-c7 --split all --batch 6 --out out/fineked-c7/subject_b6.jsonl
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.datasets import load_dataset
from harness.errors import UserError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", help="FINE-KED folder")
    ap.add_argument("--split", default="all")
    ap.add_argument("--batch", type=int, required=True, help="largest batch size B the first cases must fill")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)
    try:
        records = load_dataset(args.data, None if args.data.endswith(".jsonl") else args.split).records  # .jsonl: no levels
    except (UserError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    fit = [r for r in records if len(r.constraint_facts) >= args.batch - 1]
    if not fit:
        most = max(len(r.constraint_facts) for r in records)
        print(f"error: no case of {args.data} ({args.split}) has {args.batch - 1} constraint facts (at most {most}); "
              f"a build holds at most half of a case's sibling facts out, so rebuild with `fineked build --constraints {args.batch - 1}` "
              f"from a source with more facts per subject, or lower --batch", file=sys.stderr)
        return 2
    ids = {r.case_id for r in fit}
    ordered = fit + [r for r in records if r.case_id not in ids]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in ordered))
    print(f"{len(fit)} of {len(records)} cases fill B = {args.batch}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
