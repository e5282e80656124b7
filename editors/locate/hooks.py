"""Forward hooks that read or overwrite activations at one token position per batch row.

Three sites, all addressed through the model adapter:
- ffn_key:      the input of layer l's down projection (the key k);
- ffn_output:   the output of that projection (W k, plus bias);
- block_output: the residual stream after block l.

Each context manager yields a `Site`; after a forward pass `site.value` holds the rows at `positions`
(shape (batch, d)), or the whole activation when positions is None. `add`/`replace` (tensors of shape
(batch, d) or (d,)) change the activation at those positions, differentiably; `add` may also be a function that
returns that tensor, called at each forward (a shift computed from delta inside a captured v* step). `stop=True` raises
StopForward after the site so a caller can skip the rest of the network (see `run_until`).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch

from editors.adapters import ModelAdapter


Shift = torch.Tensor | Callable[[], torch.Tensor]


class StopForward(Exception):
    """Raised by a hook to end a forward pass early; caught by run_until()."""


@dataclass
class Site:
    positions: Sequence[int] | None = None
    add: Shift | None = None
    replace: torch.Tensor | None = None
    stop: bool = False
    value: torch.Tensor | None = None
    _cols: torch.Tensor | None = None  # positions on x's device, made once: a captured CUDA graph cannot copy them

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        add = self.add() if callable(self.add) else self.add
        if self.positions is None:
            if self.replace is not None:
                x = self.replace.to(x.dtype).expand_as(x)
            if add is not None:
                x = x + add.to(x.dtype)
            self.value = x
            return x
        rows = torch.arange(x.shape[0], device=x.device)
        if self._cols is None or self._cols.device != x.device:
            self._cols = torch.as_tensor(list(self.positions), device=x.device)
        cols = self._cols
        if self.replace is not None or add is not None:
            cur = x[rows, cols]
            new = self.replace.to(x.dtype).expand_as(cur) if self.replace is not None else cur
            if add is not None:
                new = new + add.to(x.dtype)
            x = x.index_put((rows, cols), new)
        self.value = x[rows, cols]
        return x


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def _with_first(out: Any, x: torch.Tensor) -> Any:
    return (x, *out[1:]) if isinstance(out, tuple) else x


@contextmanager
def _hook(module: torch.nn.Module, site: Site, on_input: bool) -> Iterator[Site]:
    if on_input:
        def pre(mod: torch.nn.Module, args: tuple) -> tuple:
            x = site.apply(args[0])
            if site.stop:
                raise StopForward
            return (x, *args[1:])
        handle = module.register_forward_pre_hook(pre)
    else:
        def post(mod: torch.nn.Module, args: tuple, out: Any) -> Any:
            new = _with_first(out, site.apply(_first(out)))
            if site.stop:
                raise StopForward
            return new
        handle = module.register_forward_hook(post)
    try:
        yield site
    finally:
        handle.remove()


def ffn_key(model: torch.nn.Module, adapter: ModelAdapter, layer: int, positions: Sequence[int] | None = None,
            *, add: Shift | None = None, replace: torch.Tensor | None = None, stop: bool = False):
    """Read/overwrite the key: the input of layer `layer`'s FFN down projection."""
    module = model.get_submodule(f"{adapter.block_path(layer)}.{adapter.ffn_in}")
    return _hook(module, Site(positions, add, replace, stop), on_input=True)


def ffn_output(model: torch.nn.Module, adapter: ModelAdapter, layer: int, positions: Sequence[int] | None = None,
               *, add: Shift | None = None, replace: torch.Tensor | None = None, stop: bool = False):
    """Read/overwrite the output of layer `layer`'s FFN down projection."""
    module = model.get_submodule(adapter.ffn_out_module_name(layer))
    return _hook(module, Site(positions, add, replace, stop), on_input=False)


def block_output(model: torch.nn.Module, adapter: ModelAdapter, layer: int, positions: Sequence[int] | None = None,
                 *, add: Shift | None = None, replace: torch.Tensor | None = None, stop: bool = False):
    """Read/overwrite the residual stream after block `layer`."""
    module = model.get_submodule(adapter.block_path(layer))
    return _hook(module, Site(positions, add, replace, stop), on_input=False)


def run_until(model: torch.nn.Module, **inputs: Any) -> Any:
    """Forward pass that ends quietly at the first site with stop=True; returns the output or None."""
    try:
        return model(**inputs)
    except StopForward:
        return None
