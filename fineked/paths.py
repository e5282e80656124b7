"""Where fineked keeps its shipped files and its on-disk caches (no torch imports here)."""
from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SNAPSHOT = PACKAGE_DIR / "snapshot" / "wikidata.nt.gz"
TEMPLATES = PACKAGE_DIR / "templates" / "templates.json"
QUERIES = PACKAGE_DIR / "queries"
COUNTERFACT_SAMPLE = PACKAGE_DIR / "data" / "counterfact_sample.jsonl"


def cache_dir() -> Path:
    """Same rule as editors.models.cache_dir (FINEKED_CACHE, else XDG cache/fineked), without importing torch."""
    root = os.environ.get("FINEKED_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "fineked")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


@lru_cache(maxsize=8)
def _digest(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    st = path.stat()
    return _digest(str(path), st.st_mtime_ns, st.st_size)
