"""fineked publish: the dry run, and the real huggingface_hub upload against a fake Hub.

The fake sits ONLY at the HTTP boundary: a loopback http.server answers the Hub's REST endpoints
(repo create, preupload, commit) via HF_ENDPOINT; huggingface_hub's own code runs unchanged.
"""
from __future__ import annotations

import base64
import http.server
import json
import threading

import pytest

from fineked.publish import STAGED_MARK, PublishError, publish
from fineked.records import ALL_SPLIT, LEVELS


def test_dry_run_writes_the_upload_folder_and_loads_every_split(small_build, tmp_path):
    res = publish(small_build["out"], "org/fineked", dry_run=True, staging=tmp_path / "up")
    up = tmp_path / "up"
    assert sorted(p.name for p in up.iterdir()) == [STAGED_MARK, "README.md", "data", "krd_train"]
    assert res["uploaded"] is False
    for lv in LEVELS:
        assert res["rows"][lv] == sum(any(f["level"] == lv for f in r["fine_grained"]) for r in small_build["result"].eval_records)
    assert res["rows"]["krd_train"] == len(small_build["result"].krd_records)


def test_dry_run_reads_this_folder_not_a_cached_older_one(small_build, tmp_path):
    """Regression: a second, smaller build staged under the same name must report its own row counts."""
    import shutil

    import pyarrow.parquet as pq

    first = publish(small_build["out"], "org/fineked", dry_run=True, staging=tmp_path / "a" / "up")
    smaller = tmp_path / "smaller"
    shutil.copytree(small_build["out"], smaller)
    table = pq.read_table(smaller / "data" / "easy.parquet")
    pq.write_table(table.slice(0, 1), smaller / "data" / "easy.parquet")
    second = publish(smaller, "org/fineked", dry_run=True, staging=tmp_path / "b" / "up")
    assert first["rows"]["easy"] > 1 and second["rows"]["easy"] == 1


class FakeHub:
    def __init__(self):
        self.calls, outer = [], self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.calls.append((self.path, self.headers.get("Authorization"), body))
                base = f"http://127.0.0.1:{outer.httpd.server_port}"
                if self.path == "/api/repos/create":
                    reply = {"url": f"{base}/datasets/org/fineked", "name": "org/fineked"}
                elif "/preupload/" in self.path:
                    reply = {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                       for f in json.loads(body)["files"]]}
                elif "/commit/" in self.path:
                    reply = {"commitUrl": f"{base}/datasets/org/fineked/commit/{'a' * 40}", "commitOid": "a" * 40}
                else:
                    reply = {}
                self._send(200, reply)

            def do_GET(self):
                self._send(404, {})

            def _send(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def test_upload_sends_every_file_with_the_token_and_never_prints_it(small_build, tmp_path, monkeypatch, capsys, caplog):
    hub = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{hub.httpd.server_port}")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_123")
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "ENDPOINT", f"http://127.0.0.1:{hub.httpd.server_port}")
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)  # the suite runs offline; this loopback Hub is reachable
    try:
        res = publish(small_build["out"], "org/fineked", private=True, staging=tmp_path / "up")
    finally:
        hub.httpd.shutdown()
    assert res["uploaded"] is True and res["commit"] == "a" * 40
    create = [c for c in hub.calls if c[0] == "/api/repos/create"]
    assert json.loads(create[0][2]) == {"name": "fineked", "organization": "org", "type": "dataset", "visibility": "private"}
    commit = next(c for c in hub.calls if "/commit/" in c[0])
    assert commit[1] == "Bearer hf_secret_token_123"
    files = {}
    for line in commit[2].decode().splitlines():
        item = json.loads(line)
        if item["key"] == "file":
            files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
    up = tmp_path / "up"
    assert set(files) == {"README.md", "krd_train/train.parquet"} | {f"data/{lv}.parquet" for lv in (*LEVELS, ALL_SPLIT)}
    assert files["data/hard.parquet"] == (up / "data" / "hard.parquet").read_bytes()
    out = capsys.readouterr()
    assert "hf_secret_token_123" not in out.out + out.err + caplog.text


def test_bad_repo_id_and_missing_build_fail_clearly(tmp_path):
    with pytest.raises(PublishError, match="ORG/NAME"):
        publish(tmp_path, "justaname", dry_run=True)
    with pytest.raises(PublishError, match="fineked build"):
        publish(tmp_path, "org/name", dry_run=True)
