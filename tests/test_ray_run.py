"""`fineked run --ray --workers N`: a local Ray with 2 CPU workers gives the one-process run's per-case metrics;
a worker killed mid-case has its case retried; a driver killed mid-run resumes with no case lost or duplicated."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray

from harness.cli import main
from test_runner import CASES, write_records

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("edit_s", "eval_s")  # the only fields allowed to differ between a sharded and a one-process run
EDIT = ["--editor", "memit", "--model", "tiny:llama", "--set", "stats_n_samples=40", "--set", "v_num_grad_steps=5",
        "--quiet"]
SLOW_EDIT = [*EDIT, "--set", "v_num_grad_steps=40", "--set", "v_loss_threshold=0"]  # cases long enough to kill in


@pytest.fixture(scope="module")
def cluster():
    """A local Ray with 2 CPUs owned by this test process (its processes die with it); the CLI joins it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("FINEKED_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    return tmp_path


def lines(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines() if ln.strip()]


def without_timing(rows: list[dict]) -> dict[str, dict]:
    return {r["case_id"]: {k: v for k, v in r.items() if k not in TIMING} for r in rows}


def one_process(env: Path, data: Path, *extra: str, edit: list[str] = EDIT) -> Path:
    out = env / "one"
    assert main(["run", *edit, "--dataset", str(data), "--out", str(out), "--threads", "1", *extra]) == 0
    return out


@pytest.mark.parametrize("mode", [["--mode", "single"], ["--mode", "subject", "--batch-size", "2"]])
def test_two_workers_give_the_one_process_results(cluster, env, mode):
    data = write_records(env / "cases.jsonl")
    one = one_process(env, data, *mode)
    out = env / "ray"
    assert main(["run", *EDIT, "--dataset", str(data), "--out", str(out), "--ray", cluster, "--workers", "2",
                 *mode]) == 0
    got, want = lines(out), lines(one)
    assert len(got) == len(CASES) == len({r["case_id"] for r in got})
    assert without_timing(got) == without_timing(want)  # metrics, batches, companions, config hash: all equal
    assert json.loads((out / "summary.json").read_text()) == json.loads((one / "summary.json").read_text())
    m_ray, m_one = (json.loads((d / "manifest.json").read_text()) for d in (out, one))
    assert m_ray["config"] == m_one["config"] and m_ray["placement"] == m_one["placement"]


def test_sequential_refuses_workers_in_one_line(env, capsys):
    data = write_records(env / "cases.jsonl")
    rc = main(["run", *EDIT, "--dataset", str(data), "--mode", "sequential", "--ray", "--workers", "2"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "sequential" in err and "--workers" in err
    assert main(["run", *EDIT, "--dataset", str(data), "--workers", "2"]) == 2
    assert "add --ray" in capsys.readouterr().err


def case_workers_of_this_test() -> list[int]:
    """PIDs of Ray actor processes running CaseWorker.edit_batch that this test process started (its raylet's
    children), so nothing of another job on the machine is touched."""
    import psutil

    me = os.getpid()
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            title = " ".join(p.info["cmdline"] or [])
            if title.startswith("ray::CaseWorker.edit_batch") and me in {a.pid for a in p.parents()}:
                out.append(p.info["pid"])
        except psutil.Error:
            continue
    return out


def test_a_worker_killed_mid_case_has_its_case_retried(cluster, env):
    data = write_records(env / "cases.jsonl")
    one = one_process(env, data, edit=SLOW_EDIT)
    out = env / "ray"
    killed: list[int] = []
    running = threading.Event()
    running.set()

    def killer() -> None:  # the CLI installs signal handlers, so it runs in the main thread and this one kills
        deadline = time.monotonic() + 300
        while running.is_set() and not killed and time.monotonic() < deadline:
            busy = case_workers_of_this_test()
            if busy and (out / "results.jsonl").exists():  # past the first batch: both workers are editing
                os.kill(busy[0], signal.SIGKILL)
                killed.append(busy[0])
            time.sleep(0.02)

    watcher = threading.Thread(target=killer)
    watcher.start()
    try:
        rc = main(["run", *SLOW_EDIT, "--dataset", str(data), "--out", str(out), "--ray", cluster, "--workers", "2"])
    finally:
        running.clear()
        watcher.join()
    assert killed, "no worker was caught mid-case"
    assert rc == 0
    got = lines(out)
    assert sorted(r["case_id"] for r in got) == sorted(c[0] for c in CASES)  # each case exactly once
    assert without_timing(got) == without_timing(lines(one))


def test_a_killed_driver_resumes_with_no_case_lost_or_duplicated(cluster, env):
    data = write_records(env / "cases.jsonl")
    one = one_process(env, data, edit=SLOW_EDIT)
    out = env / "ray"
    argv = ["run", *SLOW_EDIT, "--dataset", str(data), "--out", str(out), "--ray", cluster, "--workers", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *argv], cwd=ROOT, env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    n = 0
    while proc.poll() is None and time.monotonic() < deadline:
        if (out / "results.jsonl").exists():
            n = len((out / "results.jsonl").read_bytes().splitlines())
            if n >= 1:
                break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 1 <= n < len(CASES), f"the driver was not killed mid-run ({n} lines)"
    assert main(argv) == 0  # the same command resumes
    got = lines(out)
    assert sorted(r["case_id"] for r in got) == sorted(c[0] for c in CASES)
    assert without_timing(got) == without_timing(lines(one))


def test_a_model_the_workers_cannot_load_is_one_line(cluster, env, capsys):
    data = write_records(env / "cases.jsonl")
    rc = main(["run", *EDIT[:2], "--model", str(env / "no-such-model"), "--dataset", str(data), "--quiet",
               "--out", str(env / "bad"), "--ray", cluster])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("fineked run: error: cannot load model") and "no-such-model" in err[-1]
