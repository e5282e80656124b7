"""Writing a build as a Hugging Face dataset folder (parquet + JSONL + save_to_disk + card), and loading it back.

Layout of OUT (the upload folder is README.md + data/ + krd_train/):
    README.md                 dataset card with YAML `configs` (default: easy/middle/hard/all_levels; krd_train: train)
    data/{easy,middle,hard,all_levels}.parquet
    krd_train/train.parquet
    jsonl/{easy,middle,hard,all_levels,krd_train}.jsonl
    hf/default, hf/krd_train  DatasetDict.save_to_disk copies
all_levels (`--split all`) is the view join_levels makes of the three levels; it is exported once, at build time.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from fineked.records import ALL_SPLIT, LEVELS, EditRecord, record_from_dict

log = logging.getLogger(__name__)

UPLOAD_PATHS = ("README.md", "data", "krd_train")


def features():
    from datasets import Features, List, Value

    target = {"str": Value("string"), "id": Value("string")}
    return Features({
        "case_id": Value("string"), "subject": Value("string"), "subject_id": Value("string"),
        "relation_id": Value("string"), "prompt": Value("string"),
        "target_true": target, "target_new": target,
        "paraphrase_prompts": List(Value("string")), "neighborhood_prompts": List(Value("string")),
        "fine_grained": List({"relation_id": Value("string"), "prompt": Value("string"), "target": target,
                              "similarity": Value("float64"), "level": Value("string")}),
        "constraint_facts": List({"relation_id": Value("string"), "prompt": Value("string"), "target": target}),
        "source": Value("string"),
    })


def _dataset(rows: list[dict]):
    from datasets import Dataset

    return Dataset.from_list(rows, features=features())


def write_parquet(ds, path: Path) -> None:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    # One row group, fixed compression, no write-time statistics drift: byte-identical on a rebuild.
    pq.write_table(ds.data.table, path, compression="zstd", compression_level=9, row_group_size=max(1, len(ds)))


def write_jsonl(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")


def write_dataset(out: Path, splits: dict[str, list[dict]], krd: list[dict], card: str) -> dict[str, Path]:
    from datasets import DatasetDict

    out.mkdir(parents=True, exist_ok=True)
    dss = {name: _dataset(rows) for name, rows in splits.items()}
    krd_ds = _dataset(krd)
    files = {}
    for name, ds in dss.items():
        files[name] = out / "data" / f"{name}.parquet"
        write_parquet(ds, files[name])
        write_jsonl(splits[name], out / "jsonl" / f"{name}.jsonl")
    files["krd_train"] = out / "krd_train" / "train.parquet"
    write_parquet(krd_ds, files["krd_train"])
    write_jsonl(krd, out / "jsonl" / "krd_train.jsonl")
    DatasetDict(dss).save_to_disk(str(out / "hf" / "default"))
    DatasetDict({"train": krd_ds}).save_to_disk(str(out / "hf" / "krd_train"))
    (out / "README.md").write_text(card, encoding="utf-8")
    return files


ALL_LEVELS = "all"  # the --split name of the view exported as ALL_SPLIT


def join_levels(splits: dict[str, list[dict]]) -> list[dict]:
    """The cases that have fine-grained facts at every level, each carrying all of them (level by level), so one edit
    is scored on easy, middle and hard at once (a third of the edits of three per-level runs; same cases per level).
    Cases keep the first level's order and fields."""
    per_level = [{r["case_id"]: r for r in splits[lv]} for lv in LEVELS]
    common = [cid for cid in per_level[0] if all(cid in rows for rows in per_level[1:])]
    return [{**per_level[0][cid], "fine_grained": [f for rows in per_level for f in rows[cid]["fine_grained"]]}
            for cid in common]


class MissingSplit(FileNotFoundError):
    """A build without this split (a build from before the split was exported)."""


# --- loading -------------------------------------------------------------------------------------

def _rows(source: str | Path, config: str, split: str) -> list[dict]:
    path = Path(source)
    if path.exists():
        parquet = path / ("data" if config == "default" else "krd_train") / f"{split}.parquet"
        missing = [p for p in (*UPLOAD_PATHS, "krd_train/train.parquet") if not (path / p).exists()]
        if parquet.exists() and missing:  # the card is written last: without it the build stopped part-way
            raise FileNotFoundError(f"{path} is a partly written build (no {', '.join(missing)}); rerun "
                                    f"`fineked build --out {path}`")
        if parquet.exists():
            import pyarrow.parquet as pq

            return pq.read_table(parquet).to_pylist()
        if any(parquet.parent.glob("*.parquet")):
            raise MissingSplit(f"{path} has no split {split!r}; rebuild it with `fineked build --out {path}`")
        disk = path / "hf" / config if (path / "hf" / config).exists() else path
        if (disk / "dataset_dict.json").exists():
            from datasets import load_from_disk

            dd = load_from_disk(str(disk))
            if split not in dd:
                raise MissingSplit(f"{disk} has no split {split!r} (has {sorted(dd)}); rebuild it with "
                                   f"`fineked build --out {path}`")
            return dd[split].to_list()
        raise FileNotFoundError(f"{path} is not a FINE-KED build (no {parquet.relative_to(path)}); run `fineked build --out {path}`")
    if isinstance(source, Path) or source.startswith((".", "/")) or source.count("/") != 1:
        raise FileNotFoundError(f"{source} does not exist; pass a built folder or a hub id ORG/NAME")
    from datasets import load_dataset

    try:
        return load_dataset(str(source), config, split=split).to_list()
    except (ConnectionError, OSError, ValueError) as exc:  # offline, unknown repo, no such config or split
        if isinstance(exc, ValueError) and f'Unknown split "{split}"' in str(exc):  # datasets' wording
            raise MissingSplit(f"{source} has no split {split!r}; publish a build made by this version "
                               f"(`fineked build`, `fineked publish`)") from None
        raise FileNotFoundError(f"{source} is neither a folder here nor a FINE-KED dataset the Hub could provide "
                                f"({exc.__class__.__name__}); run `fineked build --out {source}` or pass a reachable "
                                f"hub id") from None


def load_fineked(source: str | Path, split: str) -> list[EditRecord]:
    """Validated evaluation records of one level, or of split="all" (join_levels, exported by the build): a built
    folder (parquet or save_to_disk) or a hub id."""
    if split == ALL_LEVELS:
        try:
            rows = _rows(source, "default", ALL_SPLIT)
        except MissingSplit:  # a build from before all_levels was exported: join its levels here
            rows = join_levels({lv: _rows(source, "default", lv) for lv in LEVELS})
        return [record_from_dict(r) for r in rows]
    if split not in LEVELS:
        raise ValueError(f"unknown FINE-KED split {split!r}; use one of {', '.join(LEVELS)} or {ALL_LEVELS}")
    return [record_from_dict(r) for r in _rows(source, "default", split)]


def load_krd_train(source: str | Path) -> list[EditRecord]:
    """The krd_train configuration: one (s, r, o) per record, every sibling fact in fine_grained."""
    return [record_from_dict(r) for r in _rows(source, "krd_train", "train")]
