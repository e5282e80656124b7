"""`--model random:NAME`: the paper's architectures at their real shapes with seeded random weights, no download.

NAME is one of the configs in editors/random_configs/ (gpt2-xl, gpt-j-6b, llama3-8b: layer counts, widths and
vocabularies of the real checkpoints) or a path to such a JSON file (tests use scaled-down copies). The tokenizer
is the offline tiny BPE of the family's style (editors.tiny): its 400 ids are valid in every real vocabulary, so
text goes through the whole pipeline; what the model says is noise, but every shape and cost is the real one
(GPU memory, time per edit; see benchmarks/gpu_edit_timing.py). Hparams are the real model's YAMLs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from editors.models import ModelLoadError, prepare

RANDOM_PREFIX = "random:"
CONFIG_DIR = Path(__file__).resolve().parent / "random_configs"
TOKENIZER_STYLE = {"gpt2": "gpt2", "gptj": "gpt2", "llama": "llama"}


def known_random_models() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def random_config(name: str) -> tuple[dict[str, Any], str]:
    """(config values, hparams key) for a known name or a JSON file."""
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        path = Path(name)
        if not (path.suffix == ".json" and path.is_file()):
            raise ModelLoadError(f"unknown random model {RANDOM_PREFIX}{name}; use one of "
                                 + ", ".join(RANDOM_PREFIX + n for n in known_random_models())
                                 + f" or {RANDOM_PREFIX}PATH.json (a transformers config)")
    values = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}
    if values.get("model_type") not in TOKENIZER_STYLE:
        raise ModelLoadError(f"{path}: model_type must be one of {', '.join(TOKENIZER_STYLE)}")
    return values, path.stem.lower()


def random_model(name: str, device: Any = "cpu", dtype: torch.dtype = torch.float32,
                 seed: int = 0) -> tuple[Any, Any, str]:
    """(model, tokenizer, hparams key): `name`'s architecture with weights from torch.manual_seed(seed), built
    directly on `device` in `dtype` (an 8B model never passes through CPU memory)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from editors.tiny import tiny_tokenizer

    values, key = random_config(name)
    model_type = values.pop("model_type")
    tok = tiny_tokenizer(TOKENIZER_STYLE[model_type])
    config = AutoConfig.for_model(model_type, **values, bos_token_id=tok.bos_token_id,
                                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config.name_or_path = f"random-{key}"  # names the cache folders (editors.locate.fingerprint)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return prepare(model, tok)[0], tok, key
