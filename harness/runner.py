"""The run loop: edit -> evaluate -> restore, resumable, one JSONL line per case, and a run manifest.

Modes:
- single: each case alone (edit, evaluate, restore);
- batch: B cases per edit, in dataset order;
- subject: subject-consistent batches, every edit of a batch shares one subject (paper Fig. 4, B=1/2/4/8);
- sequential: edits accumulate, never restored; evaluated at checkpoints and at the end.

The run folder (manifest, results, summary, sequential state, the lock and the config check) is harness.rundir's;
this module keeps only the loop. Re-running resumes; a different config refuses.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from editors.base import EditRequest, PreservedFact, RunOptions, parameter_digests
from editors.hparams import hparams_hash
from editors.placement import model_placement, peak_memory_mb, placement_fields, placement_tag, reset_peak_memory
from editors.registry import display_name, make_editor
from fineked.records import EditRecord
from harness.aggregate import aggregate
from harness.datasets import Dataset, check_lengths
from harness.errors import UserError
from harness.evaluate import evaluate_cases, load_or_compute_pre_edit, pre_edit_cache_path
from harness.metrics import PROGRESS, tagged
from harness.provenance import git_commit, library_versions
from harness.rundir import RunDir, SequentialState, config_hash, now

log = logging.getLogger(__name__)
MODES = ("single", "batch", "subject", "sequential")
BatchRunner = Callable[[Sequence[Sequence[EditRecord]]], Iterable[list[dict[str, Any]]]]


@dataclass
class RunConfig:
    model: str
    editor: str  # a registry spec, e.g. "ft" or "dike[no_fik]"
    mode: str = "single"
    batch_size: int = 1
    eval_every: int = 0  # sequential: evaluate all edited cases every N edits (0: only at the end)
    seed: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)
    gen_tokens: int = 0  # fluency: greedy tokens generated from the subject (0: fluency off)
    score_batch_size: int = 32

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"unknown --mode {self.mode!r}; use one of {', '.join(MODES)}")
        for flag, value, low in (("--batch-size", self.batch_size, 1), ("--eval-every", self.eval_every, 0),
                                 ("--fluency-tokens", self.gen_tokens, 0), ("--score-batch-size", self.score_batch_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserError(f"{flag} must be an integer of at least {low}, got {value!r}")
        if self.mode == "single" and self.batch_size != 1:
            raise UserError("--mode single edits one case at a time; use --mode batch for --batch-size > 1")


def edit_request(r: EditRecord) -> EditRequest:
    # constraint facts come from the krd_train pool; the builder holds them out of fine_grained,
    # so preserving them never leaks evaluation facts into ROME-C/MEMIT-C/DiKE.
    preserve = tuple(PreservedFact(c.prompt, c.target.str) for c in r.constraint_facts)
    return EditRequest(r.case_id, r.prompt, r.subject, r.target_new.str, r.target_true.str, preserve)


def plan_batches(records: Sequence[EditRecord], mode: str, batch_size: int) -> list[list[EditRecord]]:
    if mode == "single":
        return [[r] for r in records]
    if mode == "subject":
        groups: dict[str, list[EditRecord]] = {}
        for r in records:
            groups.setdefault(r.subject, []).append(r)
        return [g[i:i + batch_size] for g in groups.values() for i in range(0, len(g), batch_size)]
    return [list(records[i:i + batch_size]) for i in range(0, len(records), batch_size)]


def relation_objects(records: Sequence[EditRecord]) -> dict[str, set[str]]:
    """Per relation, every object seen in the records' constraint and fine-grained facts (companion targets)."""
    objects: dict[str, set[str]] = {}
    for r in records:
        for f in (*r.constraint_facts, *r.fine_grained):
            objects.setdefault(f.relation_id, set()).add(f.target.str)
    return objects


def companion_requests(record: EditRecord, k: int, objects: dict[str, set[str]],
                       seed: int) -> list[tuple[str, EditRequest]]:
    """k more edits of record's subject, to fill a subject-consistent batch when the dataset has fewer cases of that
    subject (FINE-KED has one per subject): its constraint facts (held out of the evaluation's fine-grained facts,
    so R-Loc is unaffected) rewritten to another object of the same relation (`relation_objects`), chosen by seed.
    Returns (relation id, request) pairs."""
    out = []
    for c in record.constraint_facts[:k]:
        others = sorted(objects.get(c.relation_id, set()) - {c.target.str})
        if others:
            pick = batch_seed(seed, f"{record.case_id}|{c.relation_id}") % len(others)
            out.append((c.relation_id, EditRequest(f"{record.case_id}+{c.relation_id}", c.prompt, record.subject,
                                                   others[pick], c.target.str)))
    if len(out) < k:
        raise UserError(f"case {record.case_id}: a subject-consistent batch needs {k} more edits of "
                        f"{record.subject!r} but only {len(out)} of its constraint facts can be rewritten; build "
                        f"FINE-KED with more held-out facts (`fineked build --constraints {k}`) or lower --batch-size")
    return out


def batch_seed(seed: int, case_id: str) -> int:
    """A per-batch seed from the run seed and the batch's first case: resuming changes nothing."""
    return int.from_bytes(hashlib.sha256(f"{seed}|{case_id}".encode()).digest()[:4], "little")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def skip_relations(batch: Sequence[EditRecord], companion_relations: Sequence[str] = ()) -> dict[str, set[str]]:
    """Per case, relations of the same subject rewritten by other edits in the batch (companions included): their o'
    is meant to change."""
    out: dict[str, set[str]] = {}
    for r in batch:
        out[r.case_id] = {o.relation_id for o in batch if o is not r and o.subject == r.subject and o.relation_id}
        out[r.case_id] |= set(companion_relations)
    return out


class RunningMeans:
    def __init__(self, names: Sequence[str]):
        self.sums = {n: 0.0 for n in names}
        self.counts = {n: 0 for n in names}

    def add(self, row: dict[str, Any]) -> None:
        for n in self.sums:
            if row.get(n) is not None:
                self.sums[n] += row[n]
                self.counts[n] += 1

    def postfix(self) -> dict[str, str]:
        return {n: f"{100 * self.sums[n] / c:.1f}" for n, c in self.counts.items() if c}


def peak_summary(lines: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """The largest GPU peak (MiB, torch.cuda.max_memory_allocated) of any edit and any evaluation batch; None on CPU."""
    out: dict[str, float | None] = {}
    for phase in ("edit", "eval"):
        vals = [ln["gpu_peak_mb"][phase] for ln in lines if (ln.get("gpu_peak_mb") or {}).get(phase) is not None]
        out[phase] = max(vals) if vals else None
    return out


@dataclass
class Run:
    """Everything a run needs, with the model already loaded (the CLI loads it by name)."""

    config: RunConfig
    dataset: Dataset
    model: Any
    tok: Any
    out: Path
    model_key: str
    limit: int | None = None
    quiet: bool = False
    check_restore: bool = False
    command: str = ""
    pre_edit_cache: bool = True
    vstar_cache: Path | None = None  # v* memo folder, for editors that have one (editors.locate.vstar_cache)
    # (placement_tag, placement_fields) of the model, for a driver that holds no model (harness.ray_run)
    placement: tuple[str, dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1):
            raise UserError(f"--limit must be an integer of at least 1, got {self.limit!r}")
        # quiet: no progress bars from the editor either (statistics, states)
        options = RunOptions(quiet=self.quiet, vstar_cache=Path(self.vstar_cache) if self.vstar_cache else None)
        self.editor = make_editor(self.config.editor, self.model_key, self.config.overrides, options)
        self.editor_name = display_name(self.config.editor)
        if self.vstar_cache is not None and not hasattr(self.editor, "vstar_cache"):
            log.warning("%s has no v* optimisation to memoise; --vstar-cache has no effect", self.editor_name)
        self.hp_hash = hparams_hash(self.editor.hparams)
        self.companions: dict[str, list[tuple[str, EditRequest]]] = {}  # first case id of a batch -> its fillers
        self.pre: dict[str, Any] | None = None  # pre-edit predictions per case id (prepare)

    def hashed_config(self) -> dict[str, Any]:
        c = self.config
        return {"model": c.model, "editor": self.editor_name, "hparams_hash": self.hp_hash,
                "dataset": self.dataset.name, "dataset_fingerprint": self.dataset.fingerprint, "mode": c.mode,
                "batch_size": c.batch_size, "eval_every": c.eval_every, "seed": c.seed,
                "gen_tokens": c.gen_tokens, "score_batch_size": c.score_batch_size,
                **({"placement": self.placement_of()[0][1:]} if self.placement_of()[0] else {})}

    def manifest(self, cfg: dict[str, Any]) -> dict[str, Any]:
        return {"config": cfg, "config_hash": config_hash(cfg), "model": self.config.model,
                "model_key": self.model_key, "editor": self.editor_name, "editor_spec": self.config.editor,
                "hparams": dataclasses.asdict(self.editor.hparams), "hparams_hash": self.hp_hash,
                "overrides": self.config.overrides,
                "dataset": {"name": self.dataset.name, "spec": self.dataset.spec, "split": self.dataset.split,
                            "fingerprint": self.dataset.fingerprint, "n_records": len(self.dataset.records)},
                "seed": self.config.seed, "placement": self.placement_of()[1],
                "versions": library_versions(), "git_commit": git_commit(),
                "command": self.command, "created": now()}

    def placement_of(self) -> tuple[str, dict[str, Any]]:
        if self.model is not None:
            return placement_tag(self.model), placement_fields(self.model)
        assert self.placement is not None, "a Run without a model needs its placement"
        return self.placement

    def execute(self, run_batches: BatchRunner | None = None) -> dict[str, Any]:
        """Run (or resume) to completion, holding the folder's lock; returns the aggregates of every case.
        `run_batches(batches)` yields the result lines of each batch, in any order (default: edit_batch here, in
        order; harness.ray_run shards them over Ray actors). The rest (resume, results, summary) is the same."""
        self.rundir = RunDir(self.out)
        with self.rundir.locked():
            return self._execute(run_batches or self._local_batches)

    def _local_batches(self, batches: Sequence[Sequence[EditRecord]]) -> Iterator[list[dict[str, Any]]]:
        for batch in batches:
            yield self.edit_batch(batch)

    def _execute(self, run_batches: BatchRunner) -> dict[str, Any]:
        cfg = self.hashed_config()
        self.rundir.check_config(cfg)
        self.pending_manifest = self.manifest(cfg)  # written with the first result (RunDir.ensure_manifest)
        self.rundir.note_command(self.command)
        records, batches = self.prepare(self.pre)  # a driver without a model was given them (harness.ray_run)
        if self.config.mode == "sequential":
            rows = self._sequential(records, batches)
        else:
            rows = self._restoring(records, batches, run_batches)
        return self.write_summary(rows)

    def records(self) -> list[EditRecord]:
        return list(self.dataset.records[:self.limit] if self.limit is not None else self.dataset.records)

    def prepare(self, pre: dict[str, Any] | None = None) -> tuple[list[EditRecord], list[list[EditRecord]]]:
        """Pre-edit predictions (given, from the disk cache, or computed), the batch plan and the subject-batch
        companions: everything edit_batch needs. Returns (records, batches)."""
        records = self.records()
        if self.model is not None:
            check_lengths(records, self.tok, getattr(self.model.config, "max_position_embeddings", None)
                          or getattr(self.model.config, "n_positions", None))
        if pre is None:
            cache = (pre_edit_cache_path(self.config.model, self.dataset.fingerprint, self.model)
                     if self.pre_edit_cache else None)
            pre = load_or_compute_pre_edit(self.model, self.tok, records, cache, self.config.score_batch_size)
        self.pre = pre
        batches = plan_batches(records, self.config.mode, self.config.batch_size)
        self.companions = {}
        short = [b for b in batches if len(b) < self.config.batch_size] if self.config.mode == "subject" else []
        if short:
            objects = relation_objects(self.dataset.records)
            for b in short:
                self.companions[b[0].case_id] = companion_requests(b[0], self.config.batch_size - len(b), objects,
                                                                   self.config.seed)
        return records, batches

    def write_summary(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        summary = {k: dataclasses.asdict(v) for k, v in aggregate([r["metrics"] for r in rows],
                                                                  seed=self.config.seed).items()}
        self.rundir.write_summary({"n_cases": len(rows), "metrics": summary, "gpu_peak_mb": peak_summary(rows)})
        return summary

    def _line(self, r: EditRecord, batch: Sequence[EditRecord], metrics: dict, edit_s: float, eval_s: float,
              extra: dict | None = None, peak: dict | None = None) -> dict[str, Any]:
        return {"case_id": r.case_id, "editor": self.editor_name, "hparams_hash": self.hp_hash,
                "batch": [b.case_id for b in batch], "metrics": metrics,
                "edit_s": edit_s, "eval_s": eval_s, "gpu_peak_mb": peak or {"edit": None, "eval": None},
                **(extra or {})}

    def _evaluate(self, batch: Sequence[EditRecord]) -> list[dict]:
        relations = [rel for rel, _ in self.companions.get(batch[0].case_id, [])]
        return evaluate_cases(self.model, self.tok, batch, self.pre, self.config.score_batch_size,
                              self.config.gen_tokens, skip_relations(batch, relations))

    def edit_batch(self, batch: Sequence[EditRecord]) -> list[dict[str, Any]]:
        """Edit one batch (seeded by its first case), evaluate it, restore the model: one result line per case."""
        seed_everything(batch_seed(self.config.seed, batch[0].case_id))
        device = model_placement(self.model)[0]
        reset_peak_memory(device)
        t0 = time.perf_counter()
        companions = [req for _, req in self.companions.get(batch[0].case_id, [])]
        result = self.editor.apply(self.model, self.tok, [edit_request(r) for r in batch] + companions)
        t1 = time.perf_counter()
        peak = {"edit": peak_memory_mb(device)}
        reset_peak_memory(device)
        rows = self._evaluate(batch)
        t2 = time.perf_counter()
        peak["eval"] = peak_memory_mb(device)
        before = result.digests() if self.check_restore else None
        result.restore(self.model)
        if before is not None and parameter_digests(self.model, list(before)) != before:
            raise RuntimeError(f"{self.editor_name}: restore was not bit-exact after batch {batch[0].case_id}")
        extra = {"companions": [c.case_id for c in companions]} if companions else {}
        diags = result.info.get("diagnostics") or []  # per request, in request order (the batch comes first)
        return [self._line(r, batch, row, (t1 - t0) / (len(batch) + len(companions)), (t2 - t1) / len(batch),
                           {**extra, **({"diagnostics": diags[j]} if j < len(diags) else {})}, peak)
                for j, (r, row) in enumerate(zip(batch, rows))]

    def _restoring(self, records: list[EditRecord], batches: list[list[EditRecord]],
                   run_batches: BatchRunner) -> list[dict]:
        lines = self.rundir.results()
        done = {ln["case_id"] for ln in lines}
        wanted = {r.case_id for r in records}
        means = RunningMeans([m.name for m in tagged(PROGRESS)])
        for ln in lines:
            if ln["case_id"] in wanted:
                means.add(ln["metrics"])
        bar = tqdm(total=len(records), initial=len(done & wanted), disable=self.quiet, desc=self.editor_name,
                   unit="case")
        bar.set_postfix(means.postfix())
        todo = [b for b in batches if any(r.case_id not in done for r in b)]
        for batch_lines in run_batches(todo):
            # a batch partly done before (a larger --limit) is edited whole again; only its new cases are written
            new = [ln for ln in batch_lines if ln["case_id"] not in done]
            self.rundir.ensure_manifest(self.pending_manifest)
            self.rundir.append_results(new)
            for ln in new:
                done.add(ln["case_id"])
                means.add(ln["metrics"])
            bar.update(len(new))
            bar.set_postfix(means.postfix())
        bar.close()
        by_id = {ln["case_id"]: ln for ln in self.rundir.results()}
        return [by_id[r.case_id] for r in records]

    def _sequential(self, records: list[EditRecord], batches: list[list[EditRecord]]) -> list[dict]:
        """Edits accumulate. After every batch the touched weights and the editor's state are saved
        (SequentialState); a resumed run, or one with a larger --limit, loads them and goes on from there."""
        rd = self.rundir
        lines = rd.results()
        if {ln["case_id"] for ln in lines} >= {r.case_id for r in records}:
            by_id = {ln["case_id"]: ln for ln in lines}
            return [by_id[r.case_id] for r in records]
        if lines:
            rd.clear_results()  # a sequential result set is only valid complete (a shorter --limit ran before)
        ckpts = {c["n_edits"] for c in rd.checkpoints()}
        state = SequentialState(rd)
        done = state.load(self.model, self.editor, batches)
        edited: list[EditRecord] = [r for b in batches[:done] for r in b]
        edit_s: dict[str, float] = dict(state.edit_s)
        touched: set[str] = set(state.touched)
        bar = tqdm(total=len(records), initial=len(edited), disable=self.quiet,
                   desc=f"{self.editor_name} (sequential)", unit="edit")
        device = model_placement(self.model)[0]
        edit_peak: dict[str, float | None] = {}
        for batch in batches[done:]:
            seed_everything(batch_seed(self.config.seed, batch[0].case_id))
            reset_peak_memory(device)
            t0 = time.perf_counter()
            res = self.editor.apply(self.model, self.tok, [edit_request(r) for r in batch])  # never restored
            for r in batch:
                edit_s[r.case_id] = (time.perf_counter() - t0) / len(batch)
                edit_peak[r.case_id] = peak_memory_mb(device)
            edited += batch
            touched |= set(res.originals)
            bar.update(len(batch))
            every = self.config.eval_every
            if every and len(edited) % every < len(batch) and len(edited) < len(records) and len(edited) not in ckpts:
                rows = self._evaluate_all(edited)
                agg = aggregate(rows, seed=self.config.seed)
                rd.ensure_manifest(self.pending_manifest)
                rd.append_checkpoint({"n_edits": len(edited),
                                      "metrics": {k: dataclasses.asdict(v) for k, v in agg.items()}})
                bar.set_postfix({m.name: f"{100 * agg[m.name].value:.1f}" for m in tagged(PROGRESS) if m.name in agg})
            rd.ensure_manifest(self.pending_manifest)
            state.save(self.model, self.editor, edited, edit_s, touched)  # after its checkpoint, never before
        bar.close()
        t1 = time.perf_counter()
        reset_peak_memory(device)
        rows = self._evaluate_all(edited)
        eval_s = (time.perf_counter() - t1) / max(1, len(edited))
        eval_peak = peak_memory_mb(device)  # the largest of the final evaluation's batches
        out = [self._line(r, [r], row, edit_s[r.case_id], eval_s, {"n_edits": len(edited)},
                          {"edit": edit_peak.get(r.case_id), "eval": eval_peak})
               for r, row in zip(edited, rows)]
        rd.ensure_manifest(self.pending_manifest)
        rd.replace_results(out)  # all or nothing
        return out

    def _evaluate_all(self, records: Sequence[EditRecord], chunk: int = 64) -> list[dict]:
        rows: list[dict] = []
        for i in range(0, len(records), chunk):
            rows += evaluate_cases(self.model, self.tok, records[i:i + chunk], self.pre,
                                   self.config.score_batch_size, self.config.gen_tokens)
        return rows
