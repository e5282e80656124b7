"""Keys: the FFN input at the last subject token, averaged over the bare prompt and context prefixes."""
from __future__ import annotations

from typing import Any, Callable, ContextManager, Sequence

import torch

from editors.adapters import ModelAdapter
from editors.base import EditRequest
from editors.locate.hooks import block_output, ffn_key, run_until
from editors.locate.tokens import subject_last_token_positions


def with_prefixes(prompts: Sequence[str], prefixes: Sequence[str]) -> tuple[list[str], list[int]]:
    """[prefix + prompt] for every prompt and every context ("" first); plus where each prompt starts."""
    contexts = ["", *prefixes]
    texts = [c + p for p in prompts for c in contexts]
    starts = [len(c) for _ in prompts for c in contexts]
    return texts, starts


@torch.no_grad()
def read_at_subject(model: Any, tok: Any, adapter: ModelAdapter, layer: int, site: Callable[..., ContextManager],
                    prompts: Sequence[str], subjects: Sequence[str], search_from: Sequence[int] | None = None,
                    batch_size: int = 64) -> torch.Tensor:
    """(len(prompts), d) float32: what hook `site` (ffn_key, block_output) sees at block `layer` at each prompt's last
    subject token; the forward pass of each batch stops there."""
    device = next(model.parameters()).device
    rows = []
    for i in range(0, len(prompts), batch_size):
        sl = slice(i, i + batch_size)
        enc, pos = subject_last_token_positions(tok, prompts[sl], subjects[sl], "right",
                                                None if search_from is None else search_from[sl])
        cut = max(pos) + 1  # causal: tokens after the subject cannot change what it reads
        inputs = {k: v[:, :cut].to(device) for k, v in enc.items()}
        with site(model, adapter, layer, pos, stop=True) as hook:
            run_until(model, **inputs, use_cache=False)
        rows.append(hook.value.float())
    return torch.cat(rows)


def keys_at_subject(model: Any, tok: Any, adapter: ModelAdapter, layer: int, prompts: Sequence[str],
                    subjects: Sequence[str], search_from: Sequence[int] | None = None,
                    batch_size: int = 64) -> torch.Tensor:
    """(len(prompts), d_in) float32: the key of each prompt's last subject token, one row per prompt."""
    return read_at_subject(model, tok, adapter, layer, ffn_key, prompts, subjects, search_from, batch_size)


def vstar_row_keys(model: Any, tok: Any, adapter: ModelAdapter, layer: int, request: Any, prefixes: Sequence[str],
                   kl_prompt: str) -> torch.Tensor:
    """(len(prefixes) + 2, d_in): the key at the subject in each row of the request's v* batch, in that batch's
    order (editors.locate.vstar.build_batch): the bare prompt, each prefixed prompt, then the KL prompt."""
    texts, starts = with_prefixes([request.prompt], prefixes)
    texts, starts = [*texts, kl_prompt.format(request.subject)], [*starts, 0]
    return keys_at_subject(model, tok, adapter, layer, texts, [request.subject] * len(texts), starts)


def keys_for_pairs(model: Any, tok: Any, adapter: ModelAdapter, layer: int,
                   pairs: Sequence[tuple[str, str]], prefixes: Sequence[str] = ()) -> torch.Tensor:
    """(n_pairs, d_in) float32 keys of arbitrary (prompt, subject) pairs, each averaged over "" + prefixes."""
    if not pairs:
        d_in = adapter.weight_as_out_in(adapter.ffn_out_weight(model, layer)).shape[1]
        return torch.zeros(0, d_in)
    prompts = [p for p, _ in pairs]
    texts, starts = with_prefixes(prompts, prefixes)
    subjects = [s for _, s in pairs for _ in range(len(prefixes) + 1)]
    k = keys_at_subject(model, tok, adapter, layer, texts, subjects, starts)
    return k.view(len(pairs), len(prefixes) + 1, -1).mean(dim=1)


def compute_keys(model: Any, tok: Any, adapter: ModelAdapter, layer: int, requests: Sequence[EditRequest],
                 prefixes: Sequence[str]) -> torch.Tensor:
    """(n_requests, d_in) float32: k* of each request, averaged over the bare prompt and the prefixes."""
    return keys_for_pairs(model, tok, adapter, layer, [(r.prompt, r.subject) for r in requests], prefixes)


def preserved_keys(model: Any, tok: Any, adapter: ModelAdapter, layer: int, requests: Sequence[EditRequest],
                   prefixes: Sequence[str]) -> torch.Tensor:
    """Keys of the requests' preserved facts (EditRequest.preserve), each located at its request's subject.

    The harness fills `preserve` from the held-out constraint pool (krd_train / the records' constraint facts),
    never from the fine-grained facts the evaluation scores.
    """
    pairs = [(f.prompt, r.subject) for r in requests for f in r.preserve]
    return keys_for_pairs(model, tok, adapter, layer, pairs, prefixes)


def block_outputs_at_subject(model: Any, tok: Any, adapter: ModelAdapter, layer: int,
                             pairs: Sequence[tuple[str, str]], batch_size: int = 64) -> torch.Tensor:
    """(n_pairs, d) float32: the residual stream after block `layer` at each bare prompt's last subject token."""
    return read_at_subject(model, tok, adapter, layer, block_output, [p for p, _ in pairs], [s for _, s in pairs],
                           batch_size=batch_size)
