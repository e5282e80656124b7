"""Schema validation: bad records fail with the case id and the field at fault."""
from __future__ import annotations

import pytest

from fineked.records import RecordError, record_from_dict


def good() -> dict:
    return {"case_id": "Q90-P36", "subject": "France", "subject_id": "Q142", "relation_id": "P36",
            "prompt": "The capital of France is", "target_true": {"str": "Paris", "id": "Q90"},
            "target_new": {"str": "Lyon", "id": "Q456"}, "paraphrase_prompts": ["France's capital is"],
            "neighborhood_prompts": [], "constraint_facts": [],
            "fine_grained": [{"relation_id": "P37", "prompt": "The official language of France is",
                              "target": {"str": "French", "id": "Q150"}, "similarity": 0.2, "level": "easy"}]}


def test_a_good_record_validates():
    rec = record_from_dict(good())
    assert rec.fine_grained[0].target.str == "French" and rec.to_dict()["case_id"] == "Q90-P36"


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.update(prompt="The capital is"), "prompt"),
    (lambda d: d["target_new"].update(str=""), "target_new.str"),
    (lambda d: d.update(target_new={"str": "Paris", "id": "Q90"}), "target_new"),
    (lambda d: d["fine_grained"][0].update(level="extreme"), "fine_grained[0].level"),
    (lambda d: d["fine_grained"][0].update(similarity="high"), "fine_grained[0].similarity"),
    (lambda d: d.update(paraphrase_prompts=[""]), "paraphrase_prompts"),
])
def test_bad_records_name_the_case_and_field(mutate, field):
    d = good()
    mutate(d)
    with pytest.raises(RecordError) as exc:
        record_from_dict(d)
    assert "Q90-P36" in str(exc.value) and field in str(exc.value)
