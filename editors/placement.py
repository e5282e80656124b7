"""Where a model runs: the --device and --dtype flags, and the tag on-disk caches add for them.

Solves and statistics accumulate in float64 (or float32 where the hparams say so) whatever the model's dtype; the
model's own dtype only decides its forward passes. Anything cached from those passes (statistics, prefixes,
pre-edit predictions, KRD states) changes with the dtype and the device kind, so its key carries `placement_tag`.
"""
from __future__ import annotations

from typing import Any

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class PlacementError(ValueError):
    pass


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_device(spec: str | None) -> torch.device:
    """cpu, cuda or cuda:N (None: cuda when available, else cpu)."""
    spec = spec or default_device()
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise PlacementError(f"unknown --device {spec!r}; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise PlacementError(f"unsupported --device {spec!r}; use cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise PlacementError(f"--device {spec}: this machine has no CUDA GPU visible to torch; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise PlacementError(f"--device {spec}: only {torch.cuda.device_count()} GPU(s) visible; "
                                 f"use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return device


def parse_dtype(spec: str | torch.dtype | None) -> torch.dtype:
    if spec is None:
        return torch.float32
    if isinstance(spec, torch.dtype):
        if spec not in DTYPES.values():
            raise PlacementError(f"unsupported dtype {spec}; use one of {', '.join(DTYPES)}")
        return spec
    if spec not in DTYPES:
        raise PlacementError(f"unknown --dtype {spec!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[spec]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def model_placement(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and the floating dtype of a model's parameters (its first floating parameter)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    p = next(model.parameters())
    return p.device, p.dtype


def placement_tag(model: torch.nn.Module) -> str:
    """'' for float32 on CPU (the keys caches had before this flag existed), else e.g. '-bfloat16', '-cuda',
    '-bfloat16-cuda': appended to cache keys of everything computed by the model's forward passes."""
    device, dtype = model_placement(model)
    parts = [] if dtype == torch.float32 else [dtype_name(dtype)]
    if device.type != "cpu":
        parts.append(device.type)
    return "".join(f"-{p}" for p in parts)


def placement_fields(model: torch.nn.Module) -> dict[str, Any]:
    """device and dtype for a run manifest."""
    device, dtype = model_placement(model)
    out: dict[str, Any] = {"device": str(device), "dtype": dtype_name(dtype)}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float | None:
    """torch.cuda.max_memory_allocated since the last reset_peak_memory, in MiB; None off the GPU."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
