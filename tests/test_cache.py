"""common.cache and the caches built on it: atomic writes that two processes can race on, digests checked on read,
corrupt or implausible entries recomputed with a warning, nothing unpickled."""
import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.cache import (read_json_entry, read_tensor_entry, write_json_entry, write_tensor_entry)
from editors.adapters import adapter_for
from editors.locate.prefixes import _memory, context_prefixes
from editors.locate.stats import layer_second_moments, stats_path
from editors.tiny import tiny_model_and_tokenizer
from harness.datasets import load_dataset
from harness.evaluate import load_or_compute_pre_edit, pre_edit_cache_path
from test_runner import write_records


def layer_second_moment(model, tok, adapter, layer, *rest, **kw):
    """C of one layer through layer_second_moments, the only entry point the editors use."""
    return layer_second_moments(model, tok, adapter, [layer], *rest, **kw)[layer]


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FINEKED_CACHE", str(tmp_path / "cache"))


def test_entries_round_trip_and_any_damage_reads_as_missing(tmp_path, caplog):
    value = {"w": torch.arange(6.0).reshape(2, 3), "opt": {0: {"step": torch.tensor(2.0)}}, "betas": (0.9, 0.99),
             "best": float("inf"), "none": None}
    write_tensor_entry(tmp_path / "t.safetensors", value)
    back = read_tensor_entry(tmp_path / "t.safetensors")
    assert torch.equal(back["w"], value["w"]) and torch.equal(back["opt"][0]["step"], value["opt"][0]["step"])
    assert back["betas"] == (0.9, 0.99) and back["best"] == float("inf") and back["none"] is None
    write_json_entry(tmp_path / "j.json", {"a": [1, 2]})
    assert read_json_entry(tmp_path / "j.json") == {"a": [1, 2]}
    assert read_json_entry(tmp_path / "missing.json") is None and not caplog.records
    raw = (tmp_path / "t.safetensors").read_bytes()
    damaged = {"truncated": raw[:len(raw) // 2], "garbage": b"\x00garbage", "flipped": raw[:-1] + bytes([raw[-1] ^ 1]),
               "pickle": pickle.dumps(value)}
    for name, data in damaged.items():
        (tmp_path / "t.safetensors").write_bytes(data)
        with caplog.at_level(logging.WARNING):
            assert read_tensor_entry(tmp_path / "t.safetensors") is None, name
    j = json.loads((tmp_path / "j.json").read_text())
    j["value"]["a"][0] = 7  # plausible, but not what was written: the digest says so
    (tmp_path / "j.json").write_text(json.dumps(j))
    assert read_json_entry(tmp_path / "j.json") is None
    assert sum("corrupt" in r.message for r in caplog.records) == len(damaged) + 1
    assert not list(tmp_path.glob(".*.tmp"))  # no temp file left behind


RACE = """
import sys
from pathlib import Path
import torch
from common.cache import read_tensor_entry, write_tensor_entry
path, me = Path(sys.argv[1]), float(sys.argv[2])
for i in range(100):
    write_tensor_entry(path, {"x": torch.full((64,), me), "i": i})
    got = read_tensor_entry(path)
    assert got is not None and got["x"].unique().numel() == 1, got  # whole: one writer's entry, never a mix
"""


def test_two_processes_racing_on_one_entry_100_times(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path / "e.safetensors"), str(k)], env=env,
                              stderr=subprocess.PIPE, text=True) for k in (1, 2)]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert "corrupt" not in "".join(errs)
    assert [p.name for p in tmp_path.iterdir()] == ["e.safetensors"]


PRE_EDIT_RACE = """
import sys
from pathlib import Path
from editors.tiny import tiny_model_and_tokenizer
from harness.datasets import load_dataset
from harness.evaluate import load_or_compute_pre_edit

records, path = load_dataset(sys.argv[1]).records[:1], Path(sys.argv[2])
model, tok = tiny_model_and_tokenizer("gpt2")
for i in range(100):
    path.unlink(missing_ok=True)  # every round computes and writes the entry again
    load_or_compute_pre_edit(model, tok, records, path)
"""


def test_two_processes_filling_one_pre_edit_entry_100_times(tmp_path):
    """Today's main: both processes wrote KEY.tmp and one renamed it away under the other ('No such file')."""
    data = write_records(tmp_path / "cases.jsonl")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", PRE_EDIT_RACE, str(data), str(tmp_path / "pre.json")], env=env,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs


def test_corrupt_or_nan_statistics_are_recomputed(tmp_path, caplog):
    model, tok = tiny_model_and_tokenizer("gpt2")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The capital of France is Paris.\nBerlin is in Germany.\n")
    args = (model, tok, adapter_for(model), 2, str(corpus), 2, 12)
    good = layer_second_moment(*args)
    path = stats_path(model, 2, str(corpus), 2, 12, torch.float32)
    for bad in (b"garbage", path.read_bytes()[:100]):
        path.write_bytes(bad)
        assert torch.equal(layer_second_moment(*args), good)
    nan = good.clone()
    nan[0, 0] = float("nan")
    wrong_shape = torch.eye(3)
    for C in (nan, wrong_shape):  # written with a valid digest: only the content check catches them
        write_tensor_entry(path, {"second_moment": C})
        with caplog.at_level(logging.WARNING):
            assert torch.equal(layer_second_moment(*args), good)
    assert "NaN" in caplog.text and "second moment" in caplog.text


def test_corrupt_or_wrong_pre_edit_entries_are_recomputed(tmp_path, caplog):
    records = load_dataset(str(write_records(tmp_path / "cases.jsonl"))).records[:2]
    model, tok = tiny_model_and_tokenizer("gpt2")
    path = pre_edit_cache_path("tiny", "fp", model)
    good = load_or_compute_pre_edit(model, tok, records, path)
    raw = json.loads(path.read_text())
    path.write_text(path.read_text()[:50])  # truncated
    assert load_or_compute_pre_edit(model, tok, records, path) == good
    c1 = raw["value"][records[0].case_id]
    c1["neigh_argmax"][0] = [t + 1 for t in c1["neigh_argmax"][0]]  # a wrong argmax: tok_locality 1.0 -> 0.0
    path.write_text(json.dumps(raw))
    assert load_or_compute_pre_edit(model, tok, records, path) == good
    c1["neigh_argmax"][0] = [len(tok) + 5]  # beyond the vocabulary, with a matching digest
    write_json_entry(path, raw["value"])
    with caplog.at_level(logging.WARNING):
        assert load_or_compute_pre_edit(model, tok, records, path) == good
    assert "outside the vocabulary" in caplog.text


def test_corrupt_prefix_entries_are_resampled(tmp_path):
    model, tok = tiny_model_and_tokenizer("gpt2")
    good = context_prefixes(model, tok, 3, 4)
    path, = (Path(os.environ["FINEKED_CACHE"]) / "prefixes").glob("*.json")
    for bad in ("{not json", json.dumps(["only one"])):
        _memory.clear()
        path.write_text(bad)
        assert context_prefixes(model, tok, 3, 4) == good


KILLED_WRITER = r"""
import os, sys
from pathlib import Path
import common.cache as c
path = Path(sys.argv[1])
real_replace = os.replace
os.replace = lambda *a: os.kill(os.getpid(), 9)  # SIGKILL between the temp file's fsync and its rename
c.atomic_write_bytes(path, b"x" * 1000)
"""


def test_temp_files_of_killed_writers_are_swept_and_live_ones_kept(tmp_path):
    """A writer killed (kill -9) between writing its temp file and renaming it leaves the temp file behind. The next
    write into that folder removes it; a live writer's temp file (this process) and another host's are kept."""
    from common.cache import atomic_write_bytes, temp_path

    entry = tmp_path / "bucket" / "entry.json"
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(entry)], cwd=Path(__file__).parent.parent,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert proc.returncode == -9
    orphans = [p for p in entry.parent.iterdir() if p.name.endswith(".tmp")]
    assert len(orphans) == 1 and not entry.exists()  # the killed writer's temp file, nothing published
    live = temp_path(entry)
    live.write_bytes(b"in progress")
    dead_pid = orphans[0].name[:-len(".tmp")].rsplit(".", 1)[-1].split("-")[1]
    elsewhere = entry.parent / f".entry.json.otherhost-{dead_pid}-deadbeef.tmp"  # a pid dead here, not there
    elsewhere.write_bytes(b"another host's writer")
    atomic_write_bytes(entry.parent / "other.json", b"{}")
    assert not orphans[0].exists()
    assert live.exists() and elsewhere.exists()
    assert (entry.parent / "other.json").read_bytes() == b"{}"
