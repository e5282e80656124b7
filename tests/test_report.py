"""Reports: tables match the per-case JSONL, flagged editor names flow through, charts and leaderboards."""
import csv
import json
from dataclasses import dataclass

import pytest

from editors import registry
from editors.base import EditResult
from editors.hparams import load_hparams
from editors.tiny import tiny_model_and_tokenizer
from harness.datasets import load_dataset
from harness.report import load_run, write_leaderboard, write_report
from harness.runner import Run, RunConfig
from test_runner import write_records


@dataclass
class NoopHparams:
    fast: bool = False


class NoopEditor:
    name = "noop"

    def __init__(self, hp):
        self.hparams = hp

    @classmethod
    def from_config(cls, model_key, overrides=None, options=None):
        return cls(load_hparams(NoopHparams, cls.name, model_key, overrides))

    def apply(self, model, tok, requests):
        return EditResult()


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("FINEKED_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(registry._extra, "noop", NoopEditor)
    data = load_dataset(str(write_records(tmp_path / "cases.jsonl")))
    model, tok = tiny_model_and_tokenizer("gpt2")
    dirs = []
    for spec, over in (("noop[fast]", {}), ("ft", {"lr": 0.05, "norm_constraint": 0.05, "steps": 5})):
        out = tmp_path / spec.replace("[", "_").replace("]", "")
        Run(RunConfig("tiny:gpt2", spec, overrides=over), data, model, tok, out, "tiny", quiet=True,
            command=f"fineked run --editor {spec}").execute()
        dirs.append(out)
    return dirs


def test_tables_match_jsonl_and_flagged_names_flow(runs, tmp_path):
    md = write_report(runs, tmp_path / "rep")["cases"]
    assert "| noop[fast] | tiny:gpt2 | single | 5 |" in md
    lines = [json.loads(x) for x in (runs[1] / "results.jsonl").read_text().splitlines()]
    es = 100 * sum(ln["metrics"]["ES"] for ln in lines) / len(lines)
    rows = {r["editor"]: r for r in csv.DictReader((tmp_path / "rep" / "cases.csv").open())}
    assert float(rows["ft"]["ES"]) == pytest.approx(es)
    assert float(rows["ft"]["ES_lo"]) <= es <= float(rows["ft"]["ES_hi"]) and rows["ft"]["ES_n"] == "5"
    hard = [ln["metrics"]["RLoc_tok_hard"] for ln in lines if ln["metrics"]["RLoc_tok_hard"] is not None]
    assert float(rows["ft"]["RLoc_tok_hard"]) == pytest.approx(100 * sum(hard) / len(hard))
    tex = (tmp_path / "rep" / "cases.tex").read_text()
    assert r"\begin{tabular}" in tex and r"RLoc\_tok\_hard" in tex and "noop[fast]" in tex
    png = (tmp_path / "rep" / "rloc_levels_tok.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "fluency" not in rows["ft"]  # no generations were asked for: no column


def test_leaderboard_rows_trace_to_manifests_and_merge(runs, tmp_path):
    out = tmp_path / "leaderboards" / "tiny.csv"
    assert write_leaderboard(runs[:1], out) == 1
    assert write_leaderboard(runs, out) == 2  # merged, the first row replaced not duplicated
    rows = list(csv.DictReader(out.open()))
    for r in rows:
        run = load_run(next(d for d in runs if json.loads((d / "manifest.json").read_text())["editor"] == r["editor"]))
        assert r["manifest_hash"] == run.manifest_hash and r["command"].startswith("fineked run --editor")
        assert r["n_cases"] == "5" and r["date"]


def test_report_on_a_non_run_dir_is_a_user_error(tmp_path):
    from harness.errors import UserError
    with pytest.raises(UserError, match="not a run directory"):
        write_report([tmp_path], tmp_path / "rep")


def test_sequential_curve_points_are_the_checkpoints_then_the_final_aggregate(tmp_path, monkeypatch):
    monkeypatch.setenv("FINEKED_CACHE", str(tmp_path / "cache"))
    data = load_dataset(str(write_records(tmp_path / "cases.jsonl")))
    model, tok = tiny_model_and_tokenizer("gpt2")
    out = tmp_path / "seq"
    Run(RunConfig("tiny:gpt2", "ft", overrides={"lr": 0.05, "norm_constraint": 0.05, "steps": 5},
                  mode="sequential", eval_every=2), data, model, tok, out, "tiny", quiet=True).execute()
    md = write_report([out], tmp_path / "rep")["sequential"]
    ckpts = [json.loads(x) for x in (out / "checkpoints.jsonl").read_text().splitlines()]
    assert [c["n_edits"] for c in ckpts] == [2, 4]
    final = [json.loads(x)["metrics"]["ES"] for x in (out / "results.jsonl").read_text().splitlines()]
    rows = [r for r in md.splitlines() if r.startswith("| ft")]
    assert [r.split("|")[3].strip() for r in rows] == ["2", "4", "5"]
    assert rows[0].split("|")[4].strip() == f"{100 * ckpts[0]['metrics']['ES']['value']:.1f}"
    assert rows[-1].split("|")[4].strip() == f"{100 * sum(final) / len(final):.1f}"
    assert (tmp_path / "rep" / "sequential.png").stat().st_size > 0


def test_common_cases_restricts_every_run_to_the_shared_edits(runs, tmp_path):
    # cut the ft run to its first 3 cases: the noop run must then be reported on those 3 too
    path = runs[1] / "results.jsonl"
    lines = path.read_text().splitlines()[:3]
    path.write_text("\n".join(lines) + "\n")
    md = write_report(runs, tmp_path / "rep", common=True)["cases"]
    assert "| noop[fast] | tiny:gpt2 | single | 3 |" in md and "| ft | tiny:gpt2 | single | 3 |" in md
    es = 100 * sum(json.loads(x)["metrics"]["ES"] for x in lines) / 3
    rows = {r["editor"]: r for r in csv.DictReader((tmp_path / "rep" / "cases.csv").open())}
    assert float(rows["ft"]["ES"]) == pytest.approx(es)
    assert "| noop[fast] | tiny:gpt2 | single | 5 |" in write_report(runs, tmp_path / "rep2")["cases"]


def test_batch_curve_has_one_point_per_batch_size_of_an_editor(runs, tmp_path):
    (tmp_path / "b").mkdir()
    data = load_dataset(str(write_records(tmp_path / "b" / "cases.jsonl")))
    model, tok = tiny_model_and_tokenizer("gpt2")
    out = tmp_path / "ft_b2"
    Run(RunConfig("tiny:gpt2", "ft", overrides={"lr": 0.05, "norm_constraint": 0.05, "steps": 5}, mode="subject",
                  batch_size=2), data, model, tok, out, "tiny", quiet=True).execute()
    md = write_report([runs[1], out, runs[0]], tmp_path / "rep", common=True)["batch"]
    rows = [r.split("|") for r in md.splitlines() if r.startswith("| ft")]
    assert [r[2].strip() for r in rows] == ["1", "2"]  # noop has one batch size: no curve
    for r, d in zip(rows, (runs[1], out)):
        es = [json.loads(x)["metrics"]["ES"] for x in (d / "results.jsonl").read_text().splitlines()]
        assert r[4].strip() == f"{100 * sum(es) / len(es):.1f}"
    assert (tmp_path / "rep" / "batch.png").stat().st_size > 0
