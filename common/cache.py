"""The one way to write and read files that other processes may read or write at the same time.

- Writes (`atomic_write_bytes` and the helpers on top): a temp file with a per-process unique name next to the
  target, fsync, atomic rename, fsync of the folder. A reader sees the old file or the new one, never half of
  one, and two writers of one entry never share a temp file.
- Cache entries carry a digest of their content, checked on read:
  - JSON entries (`write_json_entry` / `read_json_entry`) are {"format", "digest", "value"};
  - tensor entries (`write_tensor_entry` / `read_tensor_entry`) are safetensors files whose metadata holds the
    non-tensor part of the entry as JSON and the digest. Nested dicts, lists and tuples of tensors and plain
    values (an optimiser's state, say) round-trip, so nothing is ever unpickled.
  A missing entry reads as None; an entry that is unreadable, fails its digest or fails the caller's `check`
  (NaN statistics, a shape that does not match the model) logs a warning and also reads as None, so the
  caller recomputes it and overwrites it.
This module imports no torch at import time: fineked/ uses it for its SPARQL cache.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

JSON_FORMAT = "fineked-cache/1"
Check = Callable[[Any], "str | None"]  # returns what is wrong with a value, None if it is fine


def cache_dir() -> Path:
    """FINEKED_CACHE, else $XDG_CACHE_HOME/fineked (~/.cache/fineked); created on first use."""
    root = os.environ.get("FINEKED_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "fineked")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


_HOST = socket.gethostname().replace(".", "_").replace("-", "_") or "host"


def temp_path(path: Path) -> Path:
    """A name next to `path` that no other process or thread uses (host + pid + random)."""
    return path.with_name(f".{path.name}.{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or unknown: keep its file
    return True


def sweep_orphans(folder: Path | str) -> int:
    """Delete temp files (temp_path names) in `folder` left by writers that died before their rename (kill -9,
    power loss). Only this host's files of processes that no longer exist: a live writer's, or one from another
    host sharing the folder, is never touched. Returns how many were removed."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for e in entries:
        if not (e.name.startswith(".") and e.name.endswith(".tmp")):
            continue
        parts = e.name[:-len(".tmp")].rsplit(".", 1)[-1].split("-")
        if len(parts) != 3 or parts[0] != _HOST or not parts[1].isdigit() or _pid_alive(int(parts[1])):
            continue
        try:
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path, ignore_errors=True)
            else:
                os.unlink(e.path)
            removed += 1
        except OSError:
            pass
    if removed:
        log.info("removed %d temp file(s) left by dead writers in %s", removed, folder)
    return removed


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems do not open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_orphans(path.parent)  # one listing of the folder written to: cache folders are small (v* memo: 256 buckets)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False) + "\n")


def publish_dir(tmp: Path, out: Path) -> None:
    """Move a folder filled under a `temp_path` name to `out`; if another process got there first, keep its copy."""
    try:
        os.rename(tmp, out)
    except OSError:
        if not out.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    _fsync_dir(out.parent)


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=True).encode("utf-8")


def _reject(path: Path, why: str) -> None:
    log.warning("cache entry %s is corrupt (%s); recomputing it", path, why)


# --- JSON entries -------------------------------------------------------------------------------------------

def write_json_entry(path: Path | str, value: Any) -> None:
    atomic_write_json(path, {"format": JSON_FORMAT, "digest": _digest(_canonical(value)), "value": value},
                      indent=None)


def _read_entry(path: Path | str, decode: Callable[[bytes], Any], check: Check | None) -> Any | None:
    """decode(bytes) checked by `check`; None if the file is missing, or damaged in any way (warned)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        value = decode(raw)
        problem = check(value) if check else None
    except Exception as exc:  # any damage reads as "not cached": the caller recomputes
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        _reject(path, problem)
        return None
    return value


def _decode_json(raw: bytes) -> Any:
    entry = json.loads(raw.decode("utf-8"))
    if not isinstance(entry, dict) or entry.get("format") != JSON_FORMAT:
        raise ValueError("not a fineked cache entry")
    if entry.get("digest") != _digest(_canonical(entry["value"])):
        raise ValueError("digest mismatch")
    return entry["value"]


def read_json_entry(path: Path | str, check: Check | None = None) -> Any | None:
    """The entry's value; None if it is missing or corrupt (warned)."""
    return _read_entry(path, _decode_json, check)


# --- tensor entries (safetensors + JSON) --------------------------------------------------------------------

def _split(obj: Any, tensors: dict[str, Any], prefix: str) -> Any:
    """obj with every tensor replaced by a reference into `tensors` (JSON-able)."""
    import torch

    if isinstance(obj, torch.Tensor):
        name = prefix or "t"
        tensors[name] = obj.detach().cpu().contiguous().clone()  # clone: no shared storage for safetensors
        return {"__tensor__": name}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _split(v, tensors, f"{prefix}/{k}") for k, v in obj.items()}
        return {"__items__": [[k, _split(v, tensors, f"{prefix}/{k}")] for k, v in obj.items()]}  # int keys
    if isinstance(obj, tuple):
        return {"__tuple__": [_split(v, tensors, f"{prefix}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_split(v, tensors, f"{prefix}/{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a tensor cache entry")


def _join(obj: Any, tensors: dict[str, Any]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__items__"}:
            return {k: _join(v, tensors) for k, v in obj["__items__"]}
        if set(obj) == {"__tuple__"}:
            return tuple(_join(v, tensors) for v in obj["__tuple__"])
        return {k: _join(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, tensors) for v in obj]
    return obj


def _safetensors_parts(raw: bytes) -> tuple[dict, dict, bytes]:
    """(header without metadata, metadata, data) of a safetensors file."""
    n = int.from_bytes(raw[:8], "little")
    if len(raw) < 8 or n > len(raw) - 8:
        raise ValueError("truncated safetensors header")
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", None) or {}
    return header, meta, raw[8 + n:]


def _tensor_digest(header: dict, tree: str, data: bytes) -> str:
    return _digest(_canonical(header), tree.encode("utf-8"), data)


def write_tensor_entry(path: Path | str, value: Any) -> None:
    """`value`: a tensor, or nested dicts/lists/tuples of tensors and JSON values."""
    from safetensors.torch import save

    tensors: dict[str, Any] = {}
    tree = json.dumps(_split(value, tensors, ""), sort_keys=True)
    header, _, data = _safetensors_parts(save(tensors))
    # the metadata goes into the header only: the data and its offsets stay as they are, so serialise once
    full = json.dumps({**header, "__metadata__": {"tree": tree, "digest": _tensor_digest(header, tree, data)}},
                      separators=(",", ":")).encode("utf-8")
    full += b" " * (-len(full) % 8)  # safetensors aligns the data section to 8 bytes
    atomic_write_bytes(path, len(full).to_bytes(8, "little") + full + data)


def read_tensor_entry(path: Path | str, check: Check | None = None, device: Any = None) -> Any | None:
    """The entry's value (tensors on `device`, default CPU); None if it is missing or corrupt (warned)."""
    def decode(raw: bytes) -> Any:
        from safetensors.torch import load

        header, meta, data = _safetensors_parts(raw)
        tree = meta.get("tree")
        if tree is None or meta.get("digest") != _tensor_digest(header, tree, data):
            raise ValueError("digest mismatch")
        tensors = load(raw)
        if device is not None:
            tensors = {k: v.to(device) for k, v in tensors.items()}
        return _join(json.loads(tree), tensors)
    return _read_entry(path, decode, check)


def finite_tensors(value: Any) -> str | None:
    """A check: every floating tensor in `value` is finite (NaN or Inf statistics are corrupt)."""
    import torch

    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, torch.Tensor):
            if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                return "it holds NaN or Inf"
        elif isinstance(v, dict):
            stack += list(v.values())
        elif isinstance(v, (list, tuple)):
            stack += list(v)
    return None
