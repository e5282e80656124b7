"""`fineked run/report/leaderboard` end to end on a tiny model, and one-line errors for bad names."""
import csv
import json

import pytest

from harness.cli import main
from test_runner import write_records


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FINEKED_CACHE", str(tmp_path / "cache"))


def test_run_report_leaderboard(tmp_path, capsys):
    data = write_records(tmp_path / "cases.jsonl")
    for editor, extra in (("unedited", []), ("ft", ["--set", "lr=0.05", "--set", "norm_constraint=0.05"])):
        rc = main(["run", "--editor", editor, "--model", "tiny:llama", "--dataset", str(data), "--limit", "3",
                   "--out", str(tmp_path / editor), "--quiet", *extra])
        assert rc == 0
    manifest = json.loads((tmp_path / "ft" / "manifest.json").read_text())
    assert manifest["command"].startswith("fineked run --editor ft") and manifest["hparams"]["lr"] == 0.05
    assert main(["report", str(tmp_path / "unedited"), str(tmp_path / "ft"), "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "| unedited | tiny:llama | single | 3 |" in out and "| ft | tiny:llama |" in out
    assert main(["leaderboard", str(tmp_path / "unedited"), str(tmp_path / "ft"),
                 "--out", str(tmp_path / "lb" / "tiny.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "lb" / "tiny.csv").open()))
    assert {r["editor"] for r in rows} == {"unedited", "ft"} and all(r["manifest_hash"] for r in rows)


def test_unknown_editor_is_one_line_listing_known(tmp_path, capsys):
    data = write_records(tmp_path / "cases.jsonl")
    rc = main(["run", "--editor", "nosuch", "--model", "tiny:gpt2", "--dataset", str(data), "--out",
               str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "unknown editor 'nosuch'" in err and "ft" in err and "unedited" in err


def test_unknown_model_and_bad_split_are_one_line(tmp_path, capsys):
    data = write_records(tmp_path / "cases.jsonl")
    assert main(["run", "--editor", "ft", "--model", "tiny:nope", "--dataset", str(data)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tiny:gpt2" in err
    assert main(["run", "--editor", "ft", "--dataset", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--split" in err
    assert main(["run", "--editor", "ft", "--model", "tiny:gpt2", "--dataset", str(tmp_path / "gone.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "gone.jsonl does not exist" in err


def test_changed_hparams_into_same_dir_refuses_in_one_line(tmp_path, capsys):
    data = write_records(tmp_path / "cases.jsonl")
    args = ["run", "--editor", "ft", "--model", "tiny:gpt2", "--dataset", str(data), "--limit", "1",
            "--out", str(tmp_path / "r"), "--quiet", "--set", "steps=2"]
    assert main(args) == 0
    assert main(args[:-1] + ["steps=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "another config" in err and "new --out" in err


def test_main_puts_back_the_sigterm_handler_it_found():
    """main() turns SIGTERM into an unwind while it runs; called in-process (tests, demo), it must not keep doing so."""
    import signal

    before = signal.getsignal(signal.SIGTERM)
    assert main(["run", "--editor", "no-such-editor", "--model", "tiny:gpt2", "--dataset", "counterfact"]) == 2
    assert signal.getsignal(signal.SIGTERM) is before
