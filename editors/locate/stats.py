"""Layer statistics C = E[k kᵀ]: the uncentred second moment of FFN keys over a text corpus, cached on disk.

Corpora: "identity" (C = I, for tests), "bundled" (editors/data/stats_corpus.txt.gz, built from WikiData facts
by scripts/make_stats_corpus.py), "wikitext" (datasets.load_dataset where the Hub is reachable), or a path to a
text file (one sample per non-empty line; .gz allowed). Sequences are truncated to `max_len` tokens and at most
`n_samples` samples are read, so memory never scales with the model's context length.
"""
from __future__ import annotations

import gzip
import hashlib
import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from common.cache import cache_dir, finite_tensors, read_tensor_entry, write_tensor_entry
from editors.adapters import ModelAdapter
from editors.locate.fingerprint import model_fingerprint
from editors.locate.hooks import ffn_key, run_until

log = logging.getLogger(__name__)

BUNDLED = Path(__file__).resolve().parent.parent / "data" / "stats_corpus.txt.gz"
DTYPES = {"float32": torch.float32, "float64": torch.float64}


class StatsError(ValueError):
    pass


def _read_lines(path: Path) -> Iterator[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield line.strip()


def corpus_texts(corpus: str, n_samples: int) -> list[str]:
    """Up to n_samples texts of the named corpus."""
    if corpus == "bundled":
        if not BUNDLED.exists():
            raise StatsError(f"{BUNDLED} is missing; run `python scripts/make_stats_corpus.py`")
        lines = _read_lines(BUNDLED)
    elif corpus == "wikitext":
        try:
            import datasets
            ds = datasets.load_dataset("wikitext", "wikitext-103-raw-v1", split="train")
        except Exception as exc:  # the Hub may be unreachable
            raise StatsError(f"cannot load wikitext ({type(exc).__name__}); use --set stats_corpus=bundled") from None
        lines = (t.strip() for t in ds["text"] if len(t.strip()) > 40)
    else:
        path = Path(corpus)
        if not path.is_file():
            raise StatsError(f"unknown statistics corpus {corpus!r}; use identity, bundled, wikitext or a text file")
        lines = _read_lines(path)
    out = []
    for line in lines:
        out.append(line)
        if len(out) >= n_samples:
            break
    return out


def corpus_tag(corpus: str) -> str:
    """A filename-safe name for the corpus; files are named by a hash of their content."""
    if corpus in ("bundled", "wikitext", "identity"):
        if corpus == "bundled" and BUNDLED.exists():
            return "bundled-" + hashlib.sha256(BUNDLED.read_bytes()).hexdigest()[:8]
        return corpus
    path = Path(corpus)
    if not path.is_file():
        raise StatsError(f"unknown statistics corpus {corpus!r}; use identity, bundled, wikitext or a text file")
    return f"{path.stem}-{hashlib.sha256(path.read_bytes()).hexdigest()[:8]}"


def stats_path(model: Any, layer: int, corpus: str, n_samples: int, max_len: int, dtype: torch.dtype) -> Path:
    dname = str(dtype).replace("torch.", "")
    return (cache_dir() / "stats" / model_fingerprint(model) /
            f"layer{layer}-{corpus_tag(corpus)}-n{n_samples}-len{max_len}-{dname}.safetensors")


@torch.no_grad()
def collect_second_moments(model: Any, tok: Any, adapter: ModelAdapter, layers: Sequence[int], texts: Sequence[str],
                           max_len: int, dtype: torch.dtype, batch_size: int = 16,
                           quiet: bool = False) -> tuple[dict[int, torch.Tensor], int]:
    """One pass over `texts`, stopping after the deepest layer; {layer: E[k kᵀ]} and the token count."""
    device = next(model.parameters()).device
    d_in = adapter.weight_as_out_in(adapter.ffn_out_weight(model, layers[0])).shape[1]
    acc = {l: torch.zeros(d_in, d_in, dtype=torch.float64, device=device) for l in layers}
    count = 0
    deepest = max(layers)
    texts = sorted(texts, key=len)  # similar lengths per batch: little padding; the sum does not depend on order
    old_side = tok.padding_side
    tok.padding_side = "right"
    try:
        for i in tqdm(range(0, len(texts), batch_size), desc=f"layer stats {list(layers)}", disable=quiet,
                      unit="batch"):
            enc = tok(list(texts[i:i + batch_size]), return_tensors="pt", padding=True, truncation=True,
                      max_length=max_len).to(device)
            mask = enc["attention_mask"].bool()
            with ExitStack() as stack:
                sites = {l: stack.enter_context(ffn_key(model, adapter, l, stop=(l == deepest))) for l in layers}
                run_until(model, **enc, use_cache=False)
            for l in layers:
                k = sites[l].value[mask].to(dtype)  # (n_tokens, d_in), pads dropped
                acc[l] += (k.T @ k).to(torch.float64)
            count += int(mask.sum())
    finally:
        tok.padding_side = old_side
    if count == 0:
        raise StatsError("the statistics corpus produced no tokens")
    return {l: (a / count).to(dtype).cpu() for l, a in acc.items()}, count


def layer_second_moments(model: Any, tok: Any, adapter: ModelAdapter, layers: Sequence[int], corpus: str,
                         n_samples: int, max_len: int, dtype: torch.dtype = torch.float32,
                         quiet: bool = False) -> dict[int, torch.Tensor]:
    """{layer: C} for several layers, computing the missing ones in a single pass and caching each file."""
    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    d_in = adapter.weight_as_out_in(adapter.ffn_out_weight(model, layers[0])).shape[1]
    if corpus == "identity":
        return {l: torch.eye(d_in, dtype=dtype) for l in layers}

    def check(entry: Any) -> str | None:  # a plausible but wrong entry would give wrong edits: recompute it
        C = entry.get("second_moment") if isinstance(entry, dict) else None
        if not isinstance(C, torch.Tensor) or tuple(C.shape) != (d_in, d_in) or C.dtype != dtype:
            return f"expected a {d_in}x{d_in} {dtype} second moment"
        return finite_tensors(C)

    out: dict[int, torch.Tensor] = {}
    missing = []
    for l in layers:
        entry = read_tensor_entry(stats_path(model, l, corpus, n_samples, max_len, dtype), check)
        if entry is not None:
            out[l] = entry["second_moment"]
        else:
            missing.append(l)
    if missing:
        texts = corpus_texts(corpus, n_samples)
        log.info("computing layer statistics for layers %s over %d %s samples", missing, len(texts), corpus)
        fresh, count = collect_second_moments(model, tok, adapter, missing, texts, max_len, dtype, quiet=quiet)
        for l, C in fresh.items():
            problem = finite_tensors(C)
            if problem:
                raise StatsError(f"layer {l} statistics over {corpus!r}: {problem}; the model overflows in {dtype}, "
                                 "use --set stats_dtype=float64")
            write_tensor_entry(stats_path(model, l, corpus, n_samples, max_len, dtype),
                               {"second_moment": C, "tokens": count, "samples": len(texts), "corpus": corpus,
                                "layer": l, "max_len": max_len})
            out[l] = C
    return out
