"""Issue 14: run folders that cannot be corrupted and one-line errors for bad input, each defect reproduced as
a hostile user would (real processes where the defect needs them: concurrent runs, SIGKILL, SIGTERM)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import UserError
from test_runner import write_records

ROOT = Path(__file__).resolve().parents[1]
ORIGINAL_CACHE = os.environ.get("FINEKED_CACHE")
FINEKED = [sys.executable, "-m", "harness.cli"]
FT = ["--set", "lr=0.05", "--set", "norm_constraint=0.05", "--set", "steps=5"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FINEKED_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def data(tmp_path):
    return write_records(tmp_path / "cases.jsonl")


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def run_args(data, out, editor="ft", *extra):
    return ["run", "--editor", editor, "--model", "tiny:gpt2", "--dataset", str(data), "--out", str(out), "--quiet",
            *(FT if editor == "ft" else []), *extra]


def one_line_error(capsys, argv) -> str:
    """The CLI's stderr for argv, which must end in exit status 2 and one line."""
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    return err


def lines(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


# --- 1. one writer ------------------------------------------------------------------------------------------

def test_a_second_run_on_a_locked_folder_is_refused_naming_the_holder_pid(data, tmp_path):
    """A real `fineked run` process against a folder this process holds."""
    from harness.rundir import RunDir
    out = tmp_path / "r"
    with RunDir(out).locked():
        proc = subprocess.run([*FINEKED, *run_args(data, out)], env=env(), capture_output=True, text=True,
                              timeout=300)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert f"PID {os.getpid()}" in err[0] and "another --out" in err[0]
    assert not (out / "results.jsonl").exists()


def test_two_concurrent_runs_on_one_out_never_duplicate_a_case(tmp_path):
    """Today's main: both ran and results.jsonl held 39 lines for 20 cases. Now the later one is refused
    (or, if the first already finished, resumes with nothing to do)."""
    out = tmp_path / "r"
    args = ["run", "--editor", "ft", "--model", "tiny:llama", "--dataset", "counterfact", "--limit", "20",
            "--out", str(out), "--quiet", *FT]
    procs = [subprocess.Popen([*FINEKED, *args], env=env(), stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    rcs = sorted(p.returncode for p in procs)
    assert rcs in ([0, 0], [0, 2]), errs
    if rcs == [0, 2]:
        assert any("being written by another run (PID" in e for e in errs)
    ids = [ln["case_id"] for ln in lines(out)]
    assert len(ids) == 20 and len(set(ids)) == 20
    assert json.loads((out / "summary.json").read_text())["n_cases"] == 20


# --- 2. results without a manifest, lines of another config ----------------------------------------------------

def test_a_folder_whose_manifest_was_deleted_refuses_another_editor(data, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(run_args(data, out, "ft", "--limit", "2")) == 0
    (out / "manifest.json").unlink()
    err = one_line_error(capsys, run_args(data, out, "unedited", "--limit", "2"))
    assert "holds results but no manifest.json" in err
    assert [ln["editor"] for ln in lines(out)] == ["ft", "ft"]  # untouched
    err = one_line_error(capsys, ["report", str(out), "--out", str(tmp_path / "rep")])
    assert "no manifest.json" in err


def test_a_result_line_of_another_config_is_refused_on_read(data, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(run_args(data, out, "ft", "--limit", "2")) == 0
    rows = lines(out)
    rows[1]["config_hash"] = "0" * 16  # e.g. appended by a run of another config
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    err = one_line_error(capsys, ["report", str(out), "--out", str(tmp_path / "rep")])
    assert "results.jsonl:2 was made by another config" in err


def test_a_run_that_fails_before_its_first_case_leaves_the_folder_free(data, tmp_path, capsys):
    out = tmp_path / "r"
    err = one_line_error(capsys, run_args(data, out, "ft", "--limit", "1", "--set", "layers=[99]"))
    assert "out of range" in err and not (out / "manifest.json").exists()
    assert main(run_args(data, out, "ft", "--limit", "1")) == 0  # the corrected rerun is not "another config"


@pytest.mark.parametrize("name", ["manifest.json", "summary.json"])
def test_manifest_and_summary_are_written_atomically(data, tmp_path, monkeypatch, name):
    """Killed while the manifest (summary) is being written: no half file, and the rerun finishes the run.
    Today's main wrote them in place with no temp file and no fsync."""
    out, real = tmp_path / "r", os.fsync

    def dies_writing(fd):
        if name in os.readlink(f"/proc/self/fd/{fd}"):
            raise KeyboardInterrupt
        real(fd)
    monkeypatch.setattr(os, "fsync", dies_writing)
    assert main(run_args(data, out, "ft", "--limit", "2")) == 130  # "interrupted; rerun to resume"
    monkeypatch.setattr(os, "fsync", real)
    assert not (out / name).exists() and not list(out.glob(".*.tmp"))
    assert main(run_args(data, out, "ft", "--limit", "2")) == 0
    assert json.loads((out / "summary.json").read_text())["n_cases"] == 2


# --- readers never rewrite; kill -9 and resume ----------------------------------------------------------------

def test_report_leaves_a_torn_last_line_alone(data, tmp_path):
    out = tmp_path / "r"
    assert main(run_args(data, out, "ft", "--limit", "2")) == 0
    with (out / "results.jsonl").open("a") as fh:
        fh.write('{"case_id": "c3", "metr')  # a live run in the middle of a line
    before = (out / "results.jsonl").read_bytes()
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    assert (out / "results.jsonl").read_bytes() == before


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_results(tmp_path):
    args = lambda out: [*FINEKED, "run", "--editor", "ft", "--model", "tiny:llama", "--dataset",  # noqa: E731
                        "counterfact", "--limit", "20", "--out", str(out), "--quiet", *FT]
    subprocess.run(args(tmp_path / "a"), env=env(), check=True, timeout=600)
    whole = [(ln["case_id"], ln["metrics"]) for ln in lines(tmp_path / "a")]
    b = tmp_path / "b"
    proc = subprocess.Popen(args(b), env=env())
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if (b / "results.jsonl").exists() and len((b / "results.jsonl").read_bytes().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 3 <= len(lines(b)) < 20
    subprocess.run(args(b), env=env(), check=True, timeout=600)
    assert [(ln["case_id"], ln["metrics"]) for ln in lines(b)] == whole  # each case once, same numbers


# --- 3. code execution from a file ------------------------------------------------------------------------------

class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['PWNED_MARK']}",))


def test_a_malicious_krd_resume_state_is_never_run(tmp_path, monkeypatch, caplog):
    from editors.dike.checkpoint import RESUME, load_resume_state

    mark = tmp_path / "pwned"
    monkeypatch.setenv("PWNED_MARK", str(mark))
    ck = tmp_path / "ck"
    ck.mkdir()
    import torch
    for name in (RESUME, "resume.pt"):  # today's name and the old one
        torch.save({"state": Payload(), "meta": {}}, ck / name)
    assert load_resume_state(ck, {"model_fingerprint": "x"}) is None
    assert not mark.exists()
    assert "corrupt" in caplog.text  # warned, then trained from the start


# --- 6, 7, 9, 10. one-line errors for bad input ----------------------------------------------------------------

def jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def case(cid, prompt="The capital of France is"):
    return {"case_id": cid, "subject": "France", "prompt": prompt, "target_true": {"str": "Paris"},
            "target_new": {"str": "Rome"}}


@pytest.mark.parametrize("ids", [["c0", "c0"], [1, "1"]])
def test_duplicate_case_ids_are_refused(tmp_path, capsys, ids):
    path = jsonl(tmp_path / "d.jsonl", [case(i) for i in ids])
    err = one_line_error(capsys, run_args(path, tmp_path / "r"))
    assert "d.jsonl:2" in err and "is already used on line 1" in err


def test_bad_jsonl_lines_name_file_and_line(tmp_path, capsys):
    path = jsonl(tmp_path / "bad.jsonl", [case("a"), "{not json"])
    assert "bad.jsonl:2: not valid JSON" in one_line_error(capsys, run_args(path, tmp_path / "r"))
    path.write_bytes(json.dumps(case("a")).encode() + b"\n" + json.dumps(case("b")).encode()[:-2] + b"\xff\"}\n")
    assert "bad.jsonl:2: byte" in one_line_error(capsys, run_args(path, tmp_path / "r"))
    rec = case("a")
    rec["fine_grained"] = [{"relation_id": "P1", "prompt": "x", "target": {"str": "y"}, "similarity": float("nan"),
                            "level": "easy"}]
    path.write_text(json.dumps(rec) + "\n")  # json writes NaN
    assert "similarity" in one_line_error(capsys, run_args(path, tmp_path / "r"))


def test_a_huge_prompt_is_refused_with_the_cap(tmp_path, capsys):
    path = jsonl(tmp_path / "big.jsonl", [case("a", "The capital of France is " + "very " * 200_000)])
    err = one_line_error(capsys, run_args(path, tmp_path / "r"))
    assert "case a" in err and "over the cap of" in err


@pytest.mark.parametrize("argv, says", [
    (["--limit", "0"], "--limit: must be at least 1"),
    (["--limit", "-1"], "--limit: must be at least 1"),
    (["--score-batch-size", "0"], "--score-batch-size: must be at least 1"),
    (["--threads", "-2"], "--threads: must be at least 0"),
    (["--fluency-tokens", "-2"], "--fluency-tokens: must be at least 0"),
    (["--limit", "abc"], "--limit: 'abc' is not an integer"),
    (["--set", "lr=abc"], "lr='abc' must be float"),
    (["--set", "layers=[1,"], "--set layers=[1,: the value is not valid YAML"),
    (["--set", "steps=-5"], "steps=-5 must be a finite number >= 0"),
    (["--split", "easy"], "--split picks a FINE-KED level"),
])
def test_bad_flags_are_one_line_naming_the_flag(data, tmp_path, capsys, argv, says):
    assert says in one_line_error(capsys, run_args(data, tmp_path / "r", "ft", *argv))


def test_rome_flags_and_a_missing_statistics_corpus(data, tmp_path, capsys):
    base = ["run", "--editor", "rome", "--model", "tiny:gpt2", "--dataset", str(data), "--out", str(tmp_path / "r"),
            "--quiet", "--limit", "1"]
    assert "v_lr='abc' must be float" in one_line_error(capsys, base + ["--set", "v_lr=abc"])
    assert "v_num_grad_steps=-5" in one_line_error(capsys, base + ["--set", "v_num_grad_steps=-5"])
    err = one_line_error(capsys, base + ["--set", f"stats_corpus={tmp_path / 'missing.txt'}"])
    assert "unknown statistics corpus" in err


def test_out_naming_a_file_and_a_damaged_run_folder(data, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert "is a file" in one_line_error(capsys, run_args(data, tmp_path / "file"))
    out = tmp_path / "r"
    assert main(run_args(data, out, "ft", "--limit", "3")) == 0
    good = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join([good[0], good[1][:30], good[2]]) + "\n")
    assert "results.jsonl:2 is damaged" in one_line_error(capsys, ["report", str(out), "--out", str(tmp_path / "x")])
    (out / "manifest.json").write_text((out / "manifest.json").read_text()[:40])
    assert "manifest.json is damaged" in one_line_error(capsys, ["report", str(out), "--out", str(tmp_path / "x")])
    assert "manifest.json is damaged" in one_line_error(capsys, run_args(data, out, "ft", "--limit", "3"))


# --- 11. no path from file contents ---------------------------------------------------------------------------

def test_a_manifest_cannot_make_report_write_outside_out(data, tmp_path):
    out = tmp_path / "runs" / "r"
    assert main(run_args(data, out, "ft", "--limit", "1")) == 0
    m = json.loads((out / "manifest.json").read_text())
    m["dataset"]["name"] = "../../pwned_report"
    (out / "manifest.json").write_text(json.dumps(m))
    rep = tmp_path / "deep" / "er" / "rep"
    assert main(["report", str(out), "--out", str(rep)]) == 0
    assert not list(tmp_path.rglob("pwned_report*"))
    assert all(p.parent == rep for p in rep.iterdir())


# --- lower-severity risks -------------------------------------------------------------------------------------

def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_oxigraph_stops_with_its_parent(sig, monkeypatch):
    """Today's main: SIGTERM to `fineked endpoint` left Oxigraph serving."""
    if ORIGINAL_CACHE:
        monkeypatch.setenv("FINEKED_CACHE", ORIGINAL_CACHE)  # the store is loaded there already
    proc = subprocess.Popen([*FINEKED, "endpoint"], env=env(), stdout=subprocess.PIPE, text=True)
    try:
        assert "serving" in proc.stdout.readline()
        server, = children(proc.pid)
        os.kill(proc.pid, sig)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and running(server):
            time.sleep(0.1)
        assert not running(server), f"oxigraph {server} still serving after {sig.name} to its parent"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_partly_written_build_is_refused(tmp_path, capsys):
    build = tmp_path / "build"
    shutil.copytree(ROOT / "leaderboards" / "data" / "fineked", build)
    (build / "README.md").unlink()
    err = one_line_error(capsys, ["run", "--editor", "ft", "--model", "tiny:gpt2", "--dataset", str(build),
                                  "--split", "easy", "--out", str(tmp_path / "r")])
    assert "partly written build (no README.md)" in err


def test_publish_dry_run_never_deletes_a_folder_it_did_not_stage(tmp_path):
    from fineked.publish import PublishError, publish
    build = ROOT / "leaderboards" / "data" / "fineked"
    mine = tmp_path / "fineked-upload"
    mine.mkdir()
    (mine / "precious.txt").write_text("keep me")
    with pytest.raises(PublishError, match="was not staged by `fineked publish`"):
        publish(build, "org/name", dry_run=True, staging=mine)
    assert (mine / "precious.txt").read_text() == "keep me"
    publish(build, "org/name", dry_run=True, staging=tmp_path / "up")
    assert publish(build, "org/name", dry_run=True, staging=tmp_path / "up")["uploaded"] is False  # its own: replaced


def test_publish_with_the_network_down_is_one_line(tmp_path, monkeypatch):
    from fineked.endpoint import free_port
    from fineked.publish import PublishError, publish
    import huggingface_hub.constants as c
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HF_TOKEN", "hf_dummy")
    monkeypatch.setattr(c, "ENDPOINT", dead)
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    with pytest.raises(PublishError, match="cannot reach the Hub") as exc:
        publish(ROOT / "leaderboards" / "data" / "fineked", "org/name", staging=tmp_path / "up")
    assert "\n" not in str(exc.value)


def test_quiet_shows_no_progress_bar(data, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The capital of France is Paris.\n" * 20)
    assert main(["run", "--editor", "rome", "--model", "tiny:gpt2", "--dataset", str(data), "--limit", "1",
                 "--out", str(tmp_path / "r"), "--quiet", "--set", f"stats_corpus={corpus}",
                 "--set", "stats_n_samples=20", "--set", "v_num_grad_steps=2"]) == 0
    err = capsys.readouterr().err
    assert "layer stats" not in err and "it/s" not in err and "batch/s" not in err


def test_errors_from_library_calls_are_user_errors():
    from harness.datasets import load_dataset
    with pytest.raises(UserError, match="--split picks a FINE-KED level"):
        load_dataset("counterfact", "easy")


# --- the three planted gaps -----------------------------------------------------------------------------------

def test_known_fact_needs_every_target_token():
    """Planted bug: checking only the first token changes every *_known metric."""
    from harness.metrics import known_fact
    from harness.scoring import TargetScore
    assert known_fact(TargetScore((5, 7), (-0.1, -0.2), (5, 7)))
    assert not known_fact(TargetScore((5, 7), (-0.1, -0.2), (5, 8)))  # first token right, second wrong
    assert not known_fact(TargetScore((5, 7), (-0.1, -0.2), (6, 7)))
