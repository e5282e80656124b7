#!/usr/bin/env python3
"""Write fineked/data/counterfact_sample.jsonl: ~200 CounterFact cases (EasyEdit format) for the demo and tests.

    python scripts/make_counterfact_sample.py [--src ../shared/data/counterfact] [--n 200] [--seed 0]

Source: ../shared/data/counterfact/counterfact-edit.json.gz (CounterFact, Meng et al. 2022, MIT; EasyEdit
format via Jometeorie/KnowledgeSpread @ 51d7402617c2e52bde0dc11b76e400c3725a181a). A seeded sample of
case ids, written sorted, so a rerun is byte-identical.
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
from pathlib import Path


def main() -> None:
    here = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=here.parent / "shared" / "data" / "counterfact")
    ap.add_argument("--out", type=Path, default=here / "fineked" / "data" / "counterfact_sample.jsonl")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    records = json.load(gzip.open(args.src / "counterfact-edit.json.gz", "rt", encoding="utf-8"))
    # Keep only cases whose prompts contain the subject and whose locality answer is the true object.
    ok = [r for r in records if r["subject"] in r["prompt"] and r["locality_ground_truth"] == r["ground_truth"]]
    chosen = sorted(random.Random(args.seed).sample(ok, args.n), key=lambda r: r["case_id"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        for r in chosen:
            fh.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
    print(f"{args.out}: {len(chosen)} of {len(records)} cases (seed {args.seed})")


if __name__ == "__main__":
    main()
