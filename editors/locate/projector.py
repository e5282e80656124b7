"""AlphaEdit's null-space projector P of a statistics matrix C, computed on the model's device and cached on disk.

P = U Uᵀ over C's eigenvectors with eigenvalue < threshold (editors.locate.solve.nullspace_projector, float64).
At LLaMA-3-8B's FFN width (14336) one float64 eigendecomposition takes minutes on a CPU and seconds on a GPU, so it
runs where the model is, once: the entry is keyed by the digest of C's exact bytes (the statistics it comes from,
whatever produced them), the threshold and the device kind (a GPU's eigh may differ from the CPU's in the last
bits), and stored through common.cache (atomic, digest-checked; a damaged entry is recomputed).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch

from common.cache import cache_dir, read_tensor_entry, write_tensor_entry
from editors.base import tensor_digest
from editors.locate.solve import nullspace_projector

log = logging.getLogger(__name__)
PROJECTOR_VERSION = 1  # bump when what an entry holds changes


def projector_path(C: torch.Tensor, threshold: float, device: Any) -> Path:
    key = hashlib.sha256(f"{tensor_digest(C)}|{tuple(C.shape)}|{C.dtype}|{threshold!r}|"
                         f"{torch.device(device).type}|v{PROJECTOR_VERSION}".encode()).hexdigest()[:32]
    return cache_dir() / "projectors" / f"{key}.safetensors"


def cached_projector(C: torch.Tensor, threshold: float, device: Any) -> torch.Tensor:
    """P (float64, on `device`) for C: read from the cache, or an eigendecomposition on `device`, then saved."""
    path = projector_path(C, threshold, device)
    n = C.shape[0]

    def check(P: Any) -> str | None:
        if not isinstance(P, torch.Tensor) or tuple(P.shape) != (n, n) or P.dtype != torch.float64:
            return f"not a float64 {n}x{n} projector"
        return None if bool(torch.isfinite(P).all()) else "it holds NaN or Inf"

    P = read_tensor_entry(path, check, device=device)
    if P is None:
        log.info("AlphaEdit projector: eigendecomposition of a %d x %d statistics matrix on %s", n, n, device)
        P = nullspace_projector(C.to(device), threshold)
        write_tensor_entry(path, P)
    return P
