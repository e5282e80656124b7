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
        def from_config(cls, model_key, overrides=None, options=None):
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
    assert display_name("scale[gentle]") == "scale[gentle]" and ed.hparams.gentle and ed.hparams.layer == 2

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


class _Hp:
    pass


class _Good:
    name = "good"

    def __init__(self, options):
        self.hparams, self.options = _Hp(), options

    @classmethod
    def from_config(cls, model_key, overrides=None, options=None):
        return cls(options)

    def apply(self, model, tok, requests):
        return None


class _NoApply:
    name = "noapply"

    @classmethod
    def from_config(cls, model_key, overrides=None, options=None):
        return cls()


class _OldFromConfig(_Good):
    @classmethod
    def from_config(cls, model_key, overrides=None):  # before run options were passed explicitly
        return cls(None)


class _HalfStateful(_Good):
    def state_dict(self):
        return {}


class _NoHparams(_Good):
    def __init__(self, options):
        self.options = options


@pytest.mark.parametrize("cls, missing", [(_NoApply, "has no `apply`"),
                                          (_OldFromConfig, "`from_config` does not take (model_key, overrides, options)"),
                                          (_HalfStateful, "defines `state_dict` but not `load_state_dict`"),
                                          (_NoHparams, "has no `hparams`")])
def test_an_editor_missing_part_of_the_protocol_gets_one_line_naming_it(cls, missing, monkeypatch):
    monkeypatch.setitem(registry._extra, "plugin", cls)
    with pytest.raises(registry.BadEditor) as err:
        make_editor("plugin", "tiny")
    assert missing in str(err.value) and "\n" not in str(err.value) and "'plugin'" in str(err.value)


def test_run_options_reach_the_editor_through_from_config(tmp_path, monkeypatch):
    from editors.base import RunOptions
    monkeypatch.setitem(registry._extra, "good", _Good)
    opts = RunOptions(quiet=True, vstar_cache=tmp_path)
    assert make_editor("good", "tiny", None, opts).options is opts
    memit = make_editor("memit", "tiny", None, opts)
    assert memit.quiet and memit.vstar_cache == tmp_path
    assert make_editor("memit", "tiny").vstar_cache is None
    assert display_name(" dike [no_fik, no_tke] ") == "dike[no_fik,no_tke]" and display_name("rome") == "rome"


@pytest.mark.parametrize("name", ["unedited", "ft", "rome", "rome_c", "memit", "memit_c", "alphaedit", "dike"])
def test_every_builtin_passes_the_protocol_check_and_takes_run_options(name, tmp_path):
    from editors.base import Editor, RunOptions
    ed = make_editor(name, "tiny", None, RunOptions(quiet=True, vstar_cache=tmp_path))
    assert isinstance(ed, Editor)
    assert getattr(ed, "vstar_cache", tmp_path) == tmp_path and getattr(ed, "quiet", True)
