"""HF round trip: parquet, save_to_disk and load_dataset all give back the built records."""
from __future__ import annotations

import json

import pytest

from fineked.export import load_fineked, load_krd_train
from fineked.records import LEVELS, record_from_dict


def test_round_trip_through_parquet_save_to_disk_and_load_dataset(small_build, tmp_path):
    from datasets import load_dataset

    out, res = small_build["out"], small_build["result"]
    for lv in LEVELS:
        want = [record_from_dict(r) for r in res.eval_records if any(f["level"] == lv for f in r["fine_grained"])]
        got = load_fineked(out, lv)
        assert [r.case_id for r in got] == [r.case_id for r in want] and len(got) > 0
        assert all(f.level == lv for r in got for f in r.fine_grained)
        assert load_fineked(out / "hf" / "default", lv) == got  # save_to_disk copy
        # the card's YAML configs drive this; a fresh datasets cache, since a stale one keyed on the same
        # pytest path can hand back an older build's rows
        hub_style = load_dataset(str(out), split=lv, cache_dir=str(tmp_path / "hf"))
        assert [record_from_dict(r) for r in hub_style.to_list()] == got
        jsonl = [record_from_dict(json.loads(line)) for line in (out / "jsonl" / f"{lv}.jsonl").read_text().splitlines()]
        assert jsonl == got
    krd = load_krd_train(out)
    assert len(krd) == len(res.krd_records) and krd[0].source == "fineked-krd"
    assert len(load_dataset(str(out), "krd_train", split="train")) == len(krd)


def test_card_states_thresholds_embedder_and_fingerprint(small_build):
    card = (small_build["out"] / "README.md").read_text()
    lo, hi = small_build["result"].thresholds
    assert f"{lo:.6f}" in card and f"{hi:.6f}" in card
    assert "all-MiniLM-L6-v2" in card and "sha256:" in card and "config_name: krd_train" in card
    assert "constraint_facts" in card


def test_unknown_split_and_missing_folder_fail_clearly(small_build, tmp_path):
    with pytest.raises(ValueError, match="unknown FINE-KED split"):
        load_fineked(small_build["out"], "train")
    with pytest.raises(FileNotFoundError, match="fineked build"):
        load_fineked(tmp_path, "easy")


def test_a_hub_id_the_hub_cannot_provide_is_a_one_line_error(monkeypatch):
    """A missing `out/name` reads like a hub id ORG/NAME; offline (the tests' setting) the Hub cannot answer."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"neither a folder here nor .*fineked build --out out/no-such-build"):
        load_fineked("out/no-such-build", "easy")


def test_all_levels_split_is_the_cases_with_facts_at_every_level(small_build):
    res = small_build["result"]
    want = [record_from_dict(r) for r in res.eval_records
            if all(any(f["level"] == lv for f in r["fine_grained"]) for lv in LEVELS)]
    got = load_fineked(small_build["out"], "all")
    assert len(got) > 0 and [r.case_id for r in got] == [r.case_id for r in want]
    for g, w in zip(got, want):  # every level's facts, nothing else changed
        assert sorted(g.fine_grained, key=repr) == sorted(w.fine_grained, key=repr)
        assert g.prompt == w.prompt and g.constraint_facts == w.constraint_facts


def test_all_levels_is_exported_once_and_older_builds_join_their_levels(small_build, tmp_path):
    """`--split all` reads the all_levels view the build exported (parquet, JSONL, save_to_disk, the card's configs);
    a build from before that view existed joins its levels at load time and gets the same records."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import load_dataset

    from fineked.export import join_levels

    out = small_build["out"]
    view = out / "data" / "all_levels.parquet"
    assert view.exists() and (out / "jsonl" / "all_levels.jsonl").exists()
    got = load_fineked(out, "all")
    joined = join_levels({lv: pq.read_table(out / "data" / f"{lv}.parquet").to_pylist() for lv in LEVELS})
    assert got == [record_from_dict(r) for r in joined] and len(got) > 0
    assert load_fineked(out / "hf" / "default", "all") == got
    hub_style = load_dataset(str(out), split="all_levels", cache_dir=str(tmp_path / "hf"))
    assert [record_from_dict(r) for r in hub_style.to_list()] == got

    old = tmp_path / "old"  # a build without the view
    shutil.copytree(out, old, ignore=shutil.ignore_patterns("hf", "jsonl"))
    (old / "data" / "all_levels.parquet").unlink()
    assert load_fineked(old, "all") == got
    # the view is read, not recomputed: a view whose first case keeps one fact loads with one fact
    rows = pq.read_table(view).to_pylist()
    rows[0]["fine_grained"] = rows[0]["fine_grained"][:1]
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(view)), old / "data" / "all_levels.parquet")
    assert len(got[0].fine_grained) > 1 and load_fineked(old, "all")[0].fine_grained == got[0].fine_grained[:1]
