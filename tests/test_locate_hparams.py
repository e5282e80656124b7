"""Hparams YAMLs: every editor has one per paper model and SmolLM2, each loads, cites its source, fits the model."""
import pytest

from editors.hparams import yaml_path
from editors.registry import make_editor

DEPTH = {"gpt2-xl": 48, "gpt-j-6b": 28, "llama3-8b": 32, "smollm2-135m": 30}
UPSTREAM = {"gpt2-xl": "kmeng01/|jianghoucheng/AlphaEdit", "gpt-j-6b": "kmeng01/|jianghoucheng/AlphaEdit",
            "llama3-8b": "jianghoucheng/AlphaEdit", "smollm2-135m": "our choice|SmolLM2"}


@pytest.mark.parametrize("editor", ["rome", "rome_c", "memit", "memit_c", "alphaedit"])
@pytest.mark.parametrize("model", list(DEPTH))
def test_yaml_loads_cites_source_and_fits_depth(editor, model):
    text = yaml_path(editor, model).read_text()
    assert text.startswith("#")
    import re
    assert re.search(UPSTREAM[model], text) or "settings (see ../" in text
    hp = make_editor(editor, model).hparams
    assert hp.layers and all(0 <= l < DEPTH[model] for l in hp.layers)
    assert hp.stats_n_samples > 0 and hp.stats_max_len <= 1024


def test_published_layer_choices():
    assert make_editor("rome", "gpt2-xl").hparams.layers == [17]
    assert make_editor("memit", "gpt2-xl").hparams.layers == [13, 14, 15, 16, 17]
    assert make_editor("memit", "gpt-j-6b").hparams.layers == [3, 4, 5, 6, 7, 8]
    assert make_editor("alphaedit", "llama3-8b").hparams.layers == [4, 5, 6, 7, 8]
    assert make_editor("alphaedit", "llama3-8b").hparams.nullspace_threshold == 0.02


def test_tiny_models_use_adapter_defaults_and_flags_override():
    assert make_editor("memit", "tiny").hparams.layers is None
    assert make_editor("rome", "tiny", {"layers": [2]}).hparams.layers == [2]
