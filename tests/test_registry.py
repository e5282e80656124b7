"""The registry: built-ins by entry point, a third-party package (real dist-info on sys.path) run end to end."""
import json
import textwrap

import pytest

from editors import registry
from editors.registry import UnknownEditor, display_name, make_editor
from editors.tiny import tiny_model_and_tokenizer

THIRD_PARTY = textwrap.dedent('''
    """A third-party editor: scales the FFN output weight of one layer; restores exactly."""
    from dataclasses import dataclass

    import torch

    from editors.adapters import adapter_for
    from editors.base import EditResult
    from editors.hparams import load_hparams


    @dataclass
    class ScaleHparams:
        layer: int = 1
        scale: float = 1.5
        gentle: bool = False


    class ScaleEditor:
        name = "scale"

        def __init__(self, hp):
            self.hparams = hp

        @classmethod
        def from_config(cls, model_key, overrides=None):
            return cls(load_hparams(ScaleHparams, cls.name, model_key, overrides))

        def apply(self, model, tok, requests):
            ad = adapter_for(model)
            name = ad.ffn_out_weight_name(self.hparams.layer)
            result = EditResult.snapshot(model, [name])
            with torch.no_grad():
                ad.ffn_out_weight(model, self.hparams.layer).mul_(1.1 if self.hparams.gentle else self.hparams.scale)
            return result
''')


@pytest.fixture
def third_party(tmp_path, monkeypatch):
    """An installed-looking distribution: module + dist-info with an entry point in `fineked.editors`."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "fk_scale_editor.py").write_text(THIRD_PARTY)
    info = site / "fk_scale_editor-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fk-scale-editor\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[fineked.editors]\nscale = fk_scale_editor:ScaleEditor\n")
    monkeypatch.syspath_prepend(str(site))
    return site


def test_builtins_are_registered_through_entry_points():
    found = registry.available()
    for name in ("unedited", "ft", "rome", "memit", "alphaedit", "rome_c", "memit_c", "dike"):
        assert name in found and hasattr(found[name], "load")  # entry points, not in-process registrations
    assert make_editor("ft", "tiny").name == "ft"


def test_third_party_editor_runs_through_the_harness(third_party, tmp_path, monkeypatch):
    monkeypatch.setenv("FINEKED_CACHE", str(tmp_path / "cache"))
    assert "scale" in registry.available()
    ed = make_editor("scale[gentle]", "tiny", {"layer": 2})
    assert display_name(ed) == "scale[gentle]" and ed.hparams.gentle and ed.hparams.layer == 2

    from harness.datasets import load_dataset
    from harness.runner import Run, RunConfig
    from test_runner import write_records
    data = load_dataset(str(write_records(tmp_path / "cases.jsonl")))
    model, tok = tiny_model_and_tokenizer("gptj")
    out = tmp_path / "run"
    Run(RunConfig("tiny:gptj", "scale[gentle]"), data, model, tok, out, "tiny", quiet=True,
        check_restore=True).execute()
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 5 and {ln["editor"] for ln in lines} == {"scale[gentle]"}
    Run(RunConfig("tiny:gptj", "unedited"), data, model, tok, tmp_path / "base", "tiny", quiet=True).execute()
    base = [json.loads(x) for x in (tmp_path / "base" / "results.jsonl").read_text().splitlines()]
    assert [ln["metrics"]["EM"] for ln in lines] != [ln["metrics"]["EM"] for ln in base]  # the edit took effect


def test_unknown_editor_is_one_line_listing_known():
    with pytest.raises(UnknownEditor) as err:
        make_editor("nosuch", "tiny")
    msg = str(err.value)
    assert "\n" not in msg and "nosuch" in msg and "ft, " in msg and "unedited" in msg
    with pytest.raises(UnknownEditor, match="NAME\\[flag"):
        make_editor("ft[", "tiny")
