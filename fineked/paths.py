"""Where fineked keeps its shipped files and its on-disk caches (no torch imports here)."""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from common.cache import cache_dir  # noqa: F401  (fineked modules import it from here)

PACKAGE_DIR = Path(__file__).resolve().parent
SNAPSHOT = PACKAGE_DIR / "snapshot" / "wikidata.nt.gz"
TEMPLATES = PACKAGE_DIR / "templates" / "templates.json"
QUERIES = PACKAGE_DIR / "queries"
COUNTERFACT_SAMPLE = PACKAGE_DIR / "data" / "counterfact_sample.jsonl"


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
