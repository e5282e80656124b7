"""`fineked build` bad input ends in one line on stderr and exit status 2 (no traceback)."""
from __future__ import annotations

from fineked.endpoint import free_port
from harness.cli import main


def test_unreachable_endpoint_is_one_line(capsys, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/query"
    rc = main(["build", "--endpoint", url, "--retries", "1", "--no-cache", "--quiet", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("fineked build: error:") and url in err[0] and "cannot connect" in err[0]


def test_unknown_property_is_one_line(capsys, tmp_path):
    rc = main(["build", "--relations", "P19,P99999", "--quiet", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "unknown property P99999" in err[0]
