"""experiments/subject_batch_cases.py: every record is kept, the ones that can fill a batch of B come first (in split
order), and a B no case can fill is refused with a one-line error."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def record(cid: str, n_constraints: int) -> dict:
    subj = f"Subject {cid}"
    fact = lambda i: {"relation_id": f"P{i}", "prompt": f"{subj} relation {i} is", "target": {"str": f"o{i}"}}  # noqa: E731
    return {"case_id": cid, "subject": subj, "subject_id": None, "relation_id": "P1",
            "prompt": f"{subj} is a citizen of", "target_true": {"str": "France"}, "target_new": {"str": "Japan"},
            "paraphrase_prompts": [], "neighborhood_prompts": [],
            "fine_grained": [{**fact(90), "similarity": 0.5, "level": "easy"}],
            "constraint_facts": [fact(10 + i) for i in range(n_constraints)]}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "experiments/subject_batch_cases.py", *args], cwd=ROOT,
                          capture_output=True, text=True)


def test_cases_that_fill_the_batch_come_first_and_none_is_dropped(tmp_path):
    src = tmp_path / "cases.jsonl"
    counts = {"a": 1, "b": 3, "c": 0, "d": 5, "e": 3}
    src.write_text("".join(json.dumps(record(c, n)) + "\n" for c, n in counts.items()))
    out = tmp_path / "ordered.jsonl"
    done = run(str(src), "--batch", "4", "--out", str(out))
    assert done.returncode == 0, done.stderr
    ids = [json.loads(line)["case_id"] for line in out.read_text().splitlines()]
    assert ids == ["b", "d", "e", "a", "c"]
    assert "3 of 5 cases fill B = 4" in done.stdout


def test_a_batch_no_case_can_fill_is_refused(tmp_path):
    src = tmp_path / "cases.jsonl"
    src.write_text(json.dumps(record("a", 2)) + "\n")
    done = run(str(src), "--batch", "8", "--out", str(tmp_path / "x.jsonl"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "at most 2" in done.stderr and "lower --batch" in done.stderr
    assert not (tmp_path / "x.jsonl").exists()
