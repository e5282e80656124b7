"""The local SPARQL endpoint: the bundled snapshot loaded once into Oxigraph, served read-only on 127.0.0.1."""
from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import socket
import sys
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from fineked.paths import SNAPSHOT, cache_dir, file_sha256
from fineked.sparql import SparqlError

log = logging.getLogger(__name__)


def oxigraph_binary() -> str:
    # The wheel installs the server next to the interpreter; a venv used without activation is not on PATH.
    scripts = Path(sys.executable).parent
    exe = shutil.which("oxigraph", path=os.pathsep.join([str(scripts), os.environ.get("PATH", "")]))
    if exe is None:
        raise SparqlError("the `oxigraph` server binary is missing; run `pip install oxigraph==0.5.13`")
    return exe


def store_for(snapshot: Path = SNAPSHOT, lenient: bool = False) -> Path:
    """The Oxigraph store for a snapshot, keyed by its sha256; loaded and compacted once, then reused.

    lenient: skip Oxigraph's validation while loading (faster; for large generated stand-ins).
    """
    if not snapshot.exists():
        raise FileNotFoundError(f"snapshot {snapshot} not found; run scripts/make_snapshot.py")
    store = cache_dir() / "oxigraph" / file_sha256(snapshot)[:16]
    if (store / ".compacted").exists():
        return store
    store.parent.mkdir(parents=True, exist_ok=True)
    with open(store.parent / f"{store.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes starting at once load it only once
        if (store / ".compacted").exists():
            return store
        if not (store / ".loaded").exists():
            # RocksDB stores cannot be renamed after loading, so load in place; the markers say "complete".
            shutil.rmtree(store, ignore_errors=True)
            log.info("loading %s into Oxigraph (once)", snapshot.name)
            _oxigraph(["load", "--location", str(store), "--file", str(snapshot)] + (["--lenient"] if lenient else []),
                      store, f"oxigraph load of {snapshot} failed")
            (store / ".loaded").write_text(snapshot.name + "\n")
        # The bulk loader leaves overlapping SST files that a read-only server never compacts, so every lookup
        # reads more of them as the store grows (50x store: 6.7x slower on the same queries). Stores loaded
        # before this step (a `.loaded` marker only) are compacted here too.
        log.info("compacting the Oxigraph store of %s (once)", snapshot.name)
        _oxigraph(["optimize", "--location", str(store)], store, f"oxigraph optimize of {store} failed")
        (store / ".compacted").write_text(snapshot.name + "\n")
    return store


def _oxigraph(args: list[str], store: Path, what: str) -> None:
    proc = subprocess.run([oxigraph_binary()] + args, capture_output=True, text=True, preexec_fn=_die_with_parent)
    if proc.returncode != 0:
        shutil.rmtree(store, ignore_errors=True)
        first = (proc.stderr.strip().splitlines() or ["no message"])[0]
        raise SparqlError(f"{what}: {first}; it is reloaded from the snapshot on the next run")


def _die_with_parent() -> None:
    """Runs in the child before exec: Linux sends it SIGTERM when its parent dies, even by SIGKILL, so no
    Oxigraph outlives the `fineked` that started it (SIGTERM and Ctrl-C also stop it through LocalEndpoint.stop)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    body = urllib.parse.urlencode({"query": "ASK {}"}).encode()
    req = urllib.request.Request(url, data=body, headers={"Accept": "application/sparql-results+json"})
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


class LocalEndpoint:
    """`with LocalEndpoint() as ep: ep.url` -> http://127.0.0.1:PORT/query, stopped on exit."""

    def __init__(self, port: int | None = None, snapshot: Path = SNAPSHOT, startup_timeout: float = 30.0,
                 timeout_s: int | None = None, lenient: bool = False):
        self.port = port or free_port()
        self.snapshot = snapshot
        self.timeout_s = timeout_s  # the server's own per-query limit (WDQS: 60 s); None: no limit
        self.lenient = lenient
        self.startup_timeout = startup_timeout
        self.url = f"http://127.0.0.1:{self.port}/query"
        self.proc: subprocess.Popen | None = None

    @property
    def fingerprint(self) -> str:
        return "sha256:" + file_sha256(self.snapshot)

    def start(self) -> LocalEndpoint:
        store = store_for(self.snapshot, self.lenient)
        limit = ["--timeout-s", str(self.timeout_s)] if self.timeout_s else []
        self.proc = subprocess.Popen(
            [oxigraph_binary(), "serve-read-only", "--location", str(store), "--bind", f"127.0.0.1:{self.port}"] + limit,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace").strip().splitlines() if self.proc.stderr else []
                raise SparqlError(f"oxigraph exited at start-up on port {self.port}: {err[0] if err else 'no message'}"
                                  "; pick another --port")
            if _answers(self.url):
                log.info("local endpoint ready at %s", self.url)
                return self
            time.sleep(0.1)
        self.stop()
        raise SparqlError(f"oxigraph did not answer on {self.url} within {self.startup_timeout:.0f} s")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def __enter__(self) -> LocalEndpoint:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
