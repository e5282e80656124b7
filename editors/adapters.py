"""Model adapters: module paths and weight orientation per model family, chosen by config.model_type."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ModelAdapter:
    family: str
    blocks: str  # dotted path to the ModuleList of blocks
    ffn_in: str  # module (relative to a block) whose *input* is the key k (the down projection itself)
    ffn_out: str  # the down/output projection module, relative to a block; its weight is W
    final_norm: str
    lm_head: str
    embed: str
    conv1d: bool  # True: weight is (in, out) as GPT-2 Conv1D; False: nn.Linear (out, in)

    def block_path(self, layer: int) -> str:
        return f"{self.blocks}.{layer}"

    def ffn_out_module_name(self, layer: int) -> str:
        return f"{self.blocks}.{layer}.{self.ffn_out}"

    def ffn_out_weight_name(self, layer: int) -> str:
        return f"{self.ffn_out_module_name(layer)}.weight"

    def get(self, model: torch.nn.Module, path: str) -> torch.nn.Module:
        return model.get_submodule(path)

    def n_layers(self, model: torch.nn.Module) -> int:
        return len(model.get_submodule(self.blocks))

    def ffn_out_weight(self, model: torch.nn.Module, layer: int) -> torch.nn.Parameter:
        return model.get_submodule(self.ffn_out_module_name(layer)).weight

    def weight_as_out_in(self, w: torch.Tensor) -> torch.Tensor:
        """W in the (d_out, d_in) orientation used by the editing maths (W k = value)."""
        return w.T if self.conv1d else w

    def delta_to_param(self, delta_out_in: torch.Tensor) -> torch.Tensor:
        """Convert a (d_out, d_in) update back into the parameter's own orientation."""
        return delta_out_in.T if self.conv1d else delta_out_in

    def add_to_ffn_out(self, model: torch.nn.Module, layer: int, delta_out_in: torch.Tensor) -> None:
        """Write an (out, in) update into layer `layer`'s FFN output weight, in its dtype and on its device."""
        w = self.ffn_out_weight(model, layer)
        with torch.no_grad():
            w.add_(self.delta_to_param(delta_out_in).to(device=w.device, dtype=w.dtype))

    def default_edit_layer(self, n_layers: int) -> int:
        """About a sixth of the depth: inside the first third (ROME's causal-tracing range), e.g. 5 of 30 on SmolLM2."""
        return max(0, round(n_layers * 0.17))

    def default_repr_layer(self, n_layers: int) -> int:
        """l_r at about 75 % of the depth."""
        return min(n_layers - 1, round(n_layers * 0.75))


ADAPTERS: dict[str, ModelAdapter] = {
    "gpt2": ModelAdapter("gpt2", "transformer.h", "mlp.c_proj", "mlp.c_proj", "transformer.ln_f", "lm_head",
                         "transformer.wte", conv1d=True),
    "gptj": ModelAdapter("gptj", "transformer.h", "mlp.fc_out", "mlp.fc_out", "transformer.ln_f", "lm_head",
                         "transformer.wte", conv1d=False),
    "llama": ModelAdapter("llama", "model.layers", "mlp.down_proj", "mlp.down_proj", "model.norm", "lm_head",
                          "model.embed_tokens", conv1d=False),
}
# Families with the same module layout reuse an adapter.
ADAPTERS["mistral"] = ADAPTERS["qwen2"] = ADAPTERS["llama"]


class UnknownModelFamily(ValueError):
    pass


def adapter_for(model: torch.nn.Module) -> ModelAdapter:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ADAPTERS:
        raise UnknownModelFamily(
            f"no model adapter for model_type {model_type!r}; known: {', '.join(sorted(ADAPTERS))}. "
            "Add one to editors/adapters.py:ADAPTERS.")
    return ADAPTERS[model_type]
