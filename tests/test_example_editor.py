"""examples/my_editor installs as a real package, registers through the entry point, and reports next to DiKE."""
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from editors.adapters import adapter_for
from editors.dike.checkpoint import save_krd
from editors.dike.train import KRDTrainConfig, train_krd
from editors.locate.fingerprint import model_fingerprint
from editors.registry import available
from editors.tiny import tiny_model_and_tokenizer
from harness.cli import main
from test_krd_training import tiny_samples
from test_runner import write_records

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "my_editor"
DIKE_FAST = ["--set", "layers=[1]", "--set", "repr_layer=2", "--set", "stats_corpus=identity",
             "--set", "context_prefixes=[[3,2]]", "--set", "v_num_grad_steps=8", "--set", "mom2_update_weight=1.0"]


@pytest.fixture()
def installed_example(tmp_path, monkeypatch):
    """pip-install the example into a private target folder and put it on sys.path, as `pip install` would."""
    target, source = tmp_path / "site", tmp_path / "my_editor"
    shutil.copytree(EXAMPLE, source)  # setuptools builds in the source tree; keep the checkout clean
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True)
    monkeypatch.syspath_prepend(str(target))
    importlib.invalidate_caches()
    monkeypatch.setenv("FINEKED_CACHE", str(tmp_path / "cache"))
    return target


def test_example_editor_registers_and_reports_next_to_dike(installed_example, tmp_path, capsys):
    assert "my_editor" in available()
    data = write_records(tmp_path / "cases.jsonl")

    model, tok = tiny_model_and_tokenizer("llama")  # the same seed-0 weights `--model tiny:llama` builds
    res = train_krd(model, tok, adapter_for(model), tiny_samples(),
                    KRDTrainConfig(layer=1, repr_layer=2, epochs=1, batch_size=8), quiet=True)
    krd = tmp_path / "krd"
    save_krd(krd, res.krd, {"model_fingerprint": model_fingerprint(model), "layer": 1, "repr_layer": 2})

    runs = {"unedited": [], "my_editor": ["--set", "lr=0.05"], "dike": DIKE_FAST + ["--set", f"krd_path={krd}"]}
    for editor, extra in runs.items():
        assert main(["run", "--editor", editor, "--model", "tiny:llama", "--dataset", str(data), "--limit", "3",
                     "--out", str(tmp_path / editor), "--quiet", *extra]) == 0
    capsys.readouterr()
    assert main(["report", *(str(tmp_path / e) for e in runs), "--out", str(tmp_path / "rep")]) == 0
    table = capsys.readouterr().out
    assert "| my_editor | tiny:llama |" in table and "| dike | tiny:llama |" in table

    from harness.report import load_run
    es = {e: load_run(tmp_path / e).aggregates["ES"].value for e in runs}
    assert es["my_editor"] > es["unedited"], es  # it really edits
