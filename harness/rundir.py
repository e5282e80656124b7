"""A run folder, and the only code that reads or writes one.

It holds:
  manifest.json        the config, its hash and the provenance (written once the first case has run)
  results.jsonl        one line per case, each carrying the config hash it was made under
  summary.json         the aggregates of the finished run
  checkpoints.jsonl    sequential runs: aggregates every --eval-every edits
  sequential_state.safetensors  sequential runs: the edits so far, for resuming
  run.lock, run.lock.pid        the writer's lock and its PID

Guarantees:
- one writer: `locked()` takes an exclusive lock (filelock) or stops with a one-line error naming the holder's PID;
- manifest, summary and sequential state are written atomically (common.cache);
- every result line is checked against the manifest's config hash when read; a folder with results but no
  manifest is refused, since nothing says what made them;
- readers (`fineked report`, `results()`) never rewrite a file: a torn last line (a writer killed mid-line) is
  skipped, and only the writer, under the lock, cuts it off before appending.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from common.cache import (atomic_write_json, atomic_write_text, read_tensor_entry, write_tensor_entry)
from harness.errors import UserError

log = logging.getLogger(__name__)

MANIFEST, RESULTS, SUMMARY, CHECKPOINTS = "manifest.json", "results.jsonl", "summary.json", "checkpoints.jsonl"
STATE, LOCK = "sequential_state.safetensors", "run.lock"


def config_hash(cfg: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class RunDir:
    """`RunDir(path)` reads; writing needs `with rd.locked():` (and the manifest before the first line)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"{self.path} is a file, not a run folder; pass a folder to --out")
        self.manifest_path = self.path / MANIFEST
        self.results_path = self.path / RESULTS
        self.checkpoints_path = self.path / CHECKPOINTS
        self.state_path = self.path / STATE
        self._locked = False
        self._repaired: set[Path] = set()

    # --- the lock -------------------------------------------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator["RunDir"]:
        from filelock import FileLock, Timeout

        self.path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.path / LOCK, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            pid = (self.path / f"{LOCK}.pid").read_text().strip() if (self.path / f"{LOCK}.pid").exists() else "?"
            raise UserError(f"{self.path} is being written by another run (PID {pid}); wait for it to end or "
                            "use another --out") from None
        try:
            atomic_write_text(self.path / f"{LOCK}.pid", f"{os.getpid()}\n")
            self._locked = True
            yield self
        finally:
            self._locked = False
            lock.release()

    def _writing(self) -> None:
        if not self._locked:
            raise RuntimeError(f"{self.path}: writing a run folder needs `with RunDir(...).locked():`")

    # --- manifest and config check ---------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.exists():
            return None
        try:
            m = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            if not isinstance(m, dict) or not isinstance(m.get("config"), dict):
                raise ValueError("no config")
        except (ValueError, UnicodeDecodeError) as exc:
            raise UserError(f"{self.manifest_path} is damaged ({type(exc).__name__}); restore it from a copy or "
                            "start again in a new --out") from None
        m.setdefault("config_hash", config_hash(m["config"]))
        return m

    def require_manifest(self) -> dict[str, Any]:
        m = self.manifest()
        if m is None:
            if self.holds_results():
                raise self._no_manifest()
            raise UserError(f"{self.path} is not a run directory (no {MANIFEST}); pass folders written by `fineked run`")
        return m

    def holds_results(self) -> bool:
        return any(p.exists() and p.stat().st_size > 0 for p in (self.results_path, self.checkpoints_path,
                                                                 self.state_path))

    def _no_manifest(self) -> UserError:
        return UserError(f"{self.path} holds results but no {MANIFEST}, so nothing says which config made them; "
                         f"move {RESULTS} (and {CHECKPOINTS}, {STATE}) away or use a new --out")

    def check_config(self, cfg: dict[str, Any]) -> None:
        """Refuse a folder holding another config's run, or results whose config is unknown."""
        m = self.manifest()
        if m is None:
            if self.holds_results():
                raise self._no_manifest()
            return
        old = m["config"]
        if old != cfg:
            diff = ", ".join(f"{k}: {old.get(k)!r} -> {cfg.get(k)!r}" for k in sorted(set(old) | set(cfg))
                             if old.get(k) != cfg.get(k))
            raise UserError(f"{self.path} already holds a run with another config ({diff}); use a new --out")

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self._writing()
        atomic_write_json(self.manifest_path, manifest)

    def ensure_manifest(self, manifest: dict[str, Any]) -> None:
        """Write the manifest unless it is there: call it just before the first result, checkpoint or state, so
        a run that fails before its first case leaves nothing that binds the folder to its config."""
        if not self.manifest_path.exists():
            self.write_manifest(manifest)

    def note_command(self, command: str) -> None:
        """A resume with another command (a larger --limit) names the run from now on; the history is kept."""
        self._writing()
        m = self.manifest()
        if m is None or not command or m.get("command") == command:
            return
        from harness.provenance import git_commit
        m.setdefault("resumed", []).append({"command": command, "git_commit": git_commit(), "at": now()})
        m["command"] = command
        self.write_manifest(m)

    def write_summary(self, summary: dict[str, Any]) -> None:
        self._writing()
        atomic_write_json(self.path / SUMMARY, summary)

    # --- result lines ---------------------------------------------------------------------------------------
    def _lines(self, path: Path) -> list[dict[str, Any]]:
        """The complete lines of a JSONL file, each checked against the manifest; a torn last line is skipped."""
        if not path.exists():
            return []
        raw = path.read_bytes()
        complete = raw[:raw.rfind(b"\n") + 1]
        if len(complete) != len(raw):
            log.warning("%s: ignoring a partial last line (a run was killed mid-write)", path)
        text_lines = complete.split(b"\n")[:-1]
        if not any(ln.strip() for ln in text_lines):
            return []
        m = self.manifest()
        if m is None:
            raise self._no_manifest()
        out = []
        for i, ln in enumerate(text_lines, 1):
            if not ln.strip():
                continue
            try:
                row = json.loads(ln.decode("utf-8"))
                if not isinstance(row, dict):
                    raise ValueError("not an object")
            except (ValueError, UnicodeDecodeError) as exc:
                raise UserError(f"{path}:{i} is damaged ({type(exc).__name__}); delete that line and rerun the "
                                "same `fineked run` command to redo its case") from None
            self._check_line(path, i, row, m)
            out.append(row)
        return out

    @staticmethod
    def _check_line(path: Path, i: int, row: dict[str, Any], m: dict[str, Any]) -> None:
        if "config_hash" in row:
            ok = row["config_hash"] == m["config_hash"]
        else:  # lines written before config hashes: their editor and hparams must match
            ok = all(row.get(k, m.get(k)) == m.get(k) for k in ("editor", "hparams_hash"))
        if not ok:
            raise UserError(f"{path}:{i} was made by another config than {MANIFEST} names; this folder mixes "
                            "runs, rerun into a new --out")

    def results(self) -> list[dict[str, Any]]:
        """Every finished case's line, checked; a case present twice is refused."""
        rows = self._lines(self.results_path)
        seen: set[str] = set()
        for row in rows:
            if row.get("case_id") in seen:
                raise UserError(f"{self.results_path} holds case {row.get('case_id')!r} twice; this folder was "
                                "written by two runs at once, rerun into a new --out")
            seen.add(row.get("case_id"))
        return rows

    def done_case_ids(self) -> set[str]:
        return {row["case_id"] for row in self.results()}

    def checkpoints(self) -> list[dict[str, Any]]:
        return self._lines(self.checkpoints_path)

    def _append(self, path: Path, rows: Sequence[dict[str, Any]]) -> None:
        self._writing()
        m = self.manifest()
        if m is None:
            raise RuntimeError(f"{path}: write the manifest (ensure_manifest) before the first line")
        if path not in self._repaired and path.exists():  # only the lock holder cuts a torn tail off
            raw = path.read_bytes()
            keep = raw.rfind(b"\n") + 1
            if keep != len(raw):
                with path.open("r+b") as fh:
                    fh.truncate(keep)
        self._repaired.add(path)
        text = "".join(json.dumps({**r, "config_hash": m["config_hash"]}, sort_keys=True) + "\n" for r in rows)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    def append_results(self, rows: Sequence[dict[str, Any]]) -> None:
        self._append(self.results_path, rows)

    def append_checkpoint(self, row: dict[str, Any]) -> None:
        self._append(self.checkpoints_path, [row])

    def replace_results(self, rows: Sequence[dict[str, Any]]) -> None:
        """All lines at once (a sequential run's final evaluation): the old file or the new one, nothing between."""
        self._writing()
        h = self.manifest()["config_hash"]
        atomic_write_text(self.results_path,
                          "".join(json.dumps({**r, "config_hash": h}, sort_keys=True) + "\n" for r in rows))

    def clear_results(self) -> None:
        self._writing()
        self.results_path.unlink(missing_ok=True)


class SequentialState:
    """A sequential run's progress: the weights its edits touched, the editor's state (`state_dict()`, e.g.
    AlphaEdit's accumulated keys) and the cases edited so far, in one sequential_state.safetensors entry.
    Edits are seeded per batch, so going on from a saved state gives what an uninterrupted run gives."""

    def __init__(self, rundir: RunDir):
        self.rundir = rundir
        self.edit_s: dict[str, float] = {}
        self.touched: list[str] = []

    def load(self, model: Any, editor: Any, batches: Sequence[Sequence[Any]]) -> int:
        """Number of leading batches the saved state covers (their edits now in model and editor); 0 if none."""
        import torch

        from editors.base import StatefulEditor

        saved = read_tensor_entry(self.rundir.state_path)  # unreadable: warned, start over
        if saved is None:
            return 0
        ids = saved["case_ids"]
        n, covered = 0, 0
        while n < len(batches) and covered + len(batches[n]) <= len(ids):
            if [r.case_id for r in batches[n]] != ids[covered:covered + len(batches[n])]:
                break
            covered += len(batches[n])
            n += 1
        if covered != len(ids):  # another case order or batching: the saved edits are not a prefix of this plan
            log.warning("%s: saved edits are not a prefix of this run's plan; starting over", self.rundir.state_path)
            return 0
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name in saved["touched"]:
                params[name].copy_(saved["params"][name])
        if isinstance(editor, StatefulEditor):
            editor.load_state_dict(saved["editor"])
        self.edit_s, self.touched = saved["edit_s"], saved["touched"]
        return n

    def save(self, model: Any, editor: Any, edited: Sequence[Any], edit_s: dict[str, float],
             touched: set[str]) -> None:
        from editors.base import StatefulEditor

        self.rundir._writing()
        params = dict(model.named_parameters())
        write_tensor_entry(self.rundir.state_path, {
            "params": {n: params[n] for n in sorted(touched)},
            "editor": dict(editor.state_dict()) if isinstance(editor, StatefulEditor) else {},
            "case_ids": [r.case_id for r in edited], "touched": sorted(touched),
            "edit_s": {r.case_id: edit_s[r.case_id] for r in edited}})
