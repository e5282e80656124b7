"""CounterFact loader: the bundled sample, EasyEdit normalisation, paths and URLs."""
from __future__ import annotations

import http.server
import json
import threading
from functools import partial

import pytest

from fineked.counterfact import load_counterfact, normalise
from fineked.paths import COUNTERFACT_SAMPLE
from fineked.records import RecordError

RAW = {"case_id": 0, "prompt": "The mother tongue of Danielle Darrieux is", "target_new": "English",
       "subject": "Danielle Darrieux", "ground_truth": "French",
       "rephrase_prompt": "Where Danielle Darrieux is from, people speak the language of",
       "locality_prompt": "Michel Rocard is a native speaker of", "locality_ground_truth": "French"}


def test_bundled_sample_has_200_valid_cases():
    recs = load_counterfact()
    assert len(recs) == 200 and len({r.case_id for r in recs}) == 200
    raw = [json.loads(x) for x in COUNTERFACT_SAMPLE.read_text().splitlines()]
    assert [r.target_true.str for r in recs] == [x["ground_truth"] for x in raw]
    assert all(r.source == "counterfact" and r.neighborhood_prompts for r in recs)
    assert len(load_counterfact(limit=7)) == 7


def test_easyedit_fields_map_onto_the_record():
    d = normalise(RAW)
    assert d["case_id"] == "cf-0" and d["target_true"]["str"] == "French" and d["target_new"]["str"] == "English"
    assert d["paraphrase_prompts"] == [RAW["rephrase_prompt"]] and d["neighborhood_prompts"] == [RAW["locality_prompt"]]
    # A locality prompt whose answer is not the true object cannot be scored as "prefers o": dropped.
    assert normalise({**RAW, "locality_ground_truth": "Italian"})["neighborhood_prompts"] == []


def test_loads_from_a_path_and_a_url_and_rejects_bad_records(tmp_path):
    path = tmp_path / "cf.json"
    path.write_text(json.dumps([RAW, {**RAW, "case_id": 1}]))
    assert [r.case_id for r in load_counterfact(path)] == ["cf-0", "cf-1"]
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        recs = load_counterfact(f"http://127.0.0.1:{srv.server_port}/cf.json")
    finally:
        srv.shutdown()
    assert len(recs) == 2
    path.write_text(json.dumps([{**RAW, "case_id": 5, "prompt": "Somebody else is"}]))
    with pytest.raises(RecordError, match="cf-5.*prompt"):
        load_counterfact(path)
