"""The target-value optimisation (METHOD.md §4): find delta so that site + delta at the subject makes the model say o*.

Loss = mean NLL of o* over the prefixed prompts
     + kl_factor * KL(p_delta || p_0) of the next token after "{subject} is a"  (keeps the subject's essence)
     + weight_decay * |delta| / |init|^2                                       (the ROME/MEMIT form)
with Adam, a norm clamp |delta| <= clamp_norm_factor * |init|, and early stopping once the loss falls below
`loss_threshold`. All prompts of a request share one padded batch: one forward and one backward per step.
"""
from __future__ import annotations

import inspect
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator, Sequence

import torch
import torch.nn.functional as F

from editors.adapters import ModelAdapter
from editors.base import EditRequest
from editors.locate.hooks import block_output, ffn_output
from editors.locate.tokens import last_token_positions, subject_last_token_positions
from editors.text import target_tokens

log = logging.getLogger(__name__)


@dataclass
class VStarConfig:
    """The optimisation's settings; their defaults live in the editors' hparams (LocateHparams.vstar())."""

    steps: int
    lr: float
    weight_decay: float
    kl_factor: float
    clamp_norm_factor: float
    loss_threshold: float
    kl_prompt: str = "{} is a"
    # Run the tokens before the subject once, into a KV cache: the same loss. None = on CPU only, where it halved
    # the time per edit; on an H100 (GPT2-XL shape) each small step is launch-bound and it was ~10% slower.
    cache_prefixes: bool | None = None
    # Replay every step (forward, loss, backward, Adam, clamp) as one captured CUDA graph: a GPU step is a few ms of
    # arithmetic behind hundreds of kernel launches. None = on CUDA only. False = the eager loop. Off CUDA, True runs
    # the same graph-safe step eagerly (what the tests compare with the eager loop).
    capture_steps: bool | None = None

    def uses_prefix_cache(self, device: Any) -> bool:
        return self.cache_prefixes if self.cache_prefixes is not None else torch.device(device).type == "cpu"

    def uses_captured_steps(self, device: Any) -> bool:
        return self.capture_steps if self.capture_steps is not None else torch.device(device).type == "cuda"


@dataclass
class TargetValue:
    delta: torch.Tensor  # (d,) float32, the optimised change at the site
    init: torch.Tensor  # (d,) float32, the site's value at the bare prompt before the edit
    steps: int  # forward passes run (backward passes = steps - 1 unless the step budget ran out)
    backward_passes: int
    loss: float
    nll: float
    nll_init: float  # NLL of o* before the optimisation (delta = 0)
    step_norm: float = float("nan")  # |step_map(delta)| at the end: the size of the step the clamp measures
    limit: float = float("nan")  # the clamp, clamp_norm_factor * |init|

    @property
    def target(self) -> torch.Tensor:
        return self.init + self.delta

    @property
    def at_limit(self) -> bool:
        """The final step lies on the norm clamp (within float error): the budget, not the loss, stopped it."""
        return bool(self.step_norm >= (1 - 1e-4) * self.limit)


@dataclass
class VStarBatch:
    """The padded batch of one request: rewriting rows (with o* appended) and then one KL row."""

    inputs: dict[str, torch.Tensor]
    subject_positions: list[int]
    logit_positions: torch.Tensor  # (K,) the only positions whose logits are computed (logits_to_keep)
    target_mask: torch.Tensor  # (n_rewrite, K) 1 where the logit at logit_positions[k] predicts a target token
    target_ids: torch.Tensor  # (n_rewrite, K) the token it predicts
    n_rewrite: int
    kl_index: int  # index into logit_positions of the KL row's last token
    # With a prefix cache (`cache_prefixes`), inputs hold only each row's tokens from its subject position on, and
    # cache holds the keys and values of the tokens before it, which delta cannot change.
    cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def model_inputs(self, model: Any) -> dict[str, Any]:
        if self.cache is None:
            return dict(self.inputs)
        from transformers import DynamicCache

        return {**self.inputs, cache_argument(model): DynamicCache(self.cache, config=model.config)}


def cache_argument(model: Any) -> str:
    """The forward() keyword for a KV cache: `cache` in recent transformers, `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _keep_columns(tmask: torch.Tensor, ids: torch.Tensor, kl_position: int, n: int) -> tuple[torch.Tensor, ...]:
    """Only the logits that enter the loss are computed: the LM head and log-softmax over a ~49k vocabulary at
    every position are a large share of a small model's forward and backward. Returns (columns, their target mask,
    their target ids, the KL column's index)."""
    keep = sorted(set(tmask.nonzero()[:, 1].tolist()) | {kl_position})
    cols = torch.tensor(keep)
    target_cols = cols.clamp(max=tmask.shape[1] - 1)  # kl_position may be the last column; its mask is 0 there
    in_range = (cols < tmask.shape[1]).float()
    return cols, tmask[:, target_cols] * in_range, ids[:n, 1:][:, target_cols], keep.index(kl_position)


def build_batch(tok: Any, request: EditRequest, prefixes: Sequence[str], kl_prompt: str, device: Any,
                cache_model: Any = None) -> VStarBatch:
    """The padded v* batch of `request`. With `cache_model`, the tokens before each row's subject position are run
    through it once and kept as a KV cache, and the batch holds only the rest (`_suffix_batch`)."""
    contexts = ["", *prefixes]
    # the rewriting rows: the prompt in each context, then o*'s tokens; then the KL row, the prompt alone
    texts = [*(c + request.prompt for c in contexts), kl_prompt.format(request.subject)]
    n = len(contexts)
    batch = target_tokens(tok, texts, [request.target_new] * n + [None], "right")
    _, positions = subject_last_token_positions(tok, texts, [request.subject] * len(texts), "right",
                                                [len(c) for c in contexts] + [0])
    ids, mask = batch.input_ids, batch.attention_mask
    tmask = (batch.labels[:n, :-1] != -100).float()  # the logit at j predicts a target token (token j + 1)
    kl_position = last_token_positions(mask[n:])[0]
    if cache_model is not None:
        return _suffix_batch(cache_model, ids, mask, positions, tmask, kl_position, n, device)
    cols, target_mask, target_ids, kl_index = _keep_columns(tmask, ids, kl_position, n)
    return VStarBatch(inputs={"input_ids": ids.to(device), "attention_mask": mask.to(device)},
                      subject_positions=positions,
                      logit_positions=cols.to(device), target_mask=target_mask.to(device),
                      target_ids=target_ids.to(device), n_rewrite=n, kl_index=kl_index)


@torch.no_grad()
def _suffix_batch(model: Any, ids: torch.Tensor, mask: torch.Tensor, positions: list[int], tmask: torch.Tensor,
                  kl_position: int, n: int, device: Any) -> VStarBatch:
    """Row i's tokens before its subject position p_i do not depend on delta (causal attention), so their keys and
    values are computed once, row by row (unpadded, so no fully masked rows), and left-padded with zeros to
    P = max p_i. The batch keeps tokens p_i.. of each row, right-padded, with explicit position ids p_i + k and the
    attention mask [prefix mask | suffix mask]; the loss columns are moved to the suffix coordinates."""
    rows, P = len(positions), max(positions)
    lengths = mask.sum(1).tolist()
    S = max(length - p for length, p in zip(lengths, positions))
    suffix_ids = torch.zeros(rows, S, dtype=ids.dtype)
    suffix_mask = torch.zeros(rows, S, dtype=mask.dtype)
    prefix_mask = torch.zeros(rows, P, dtype=mask.dtype)
    suffix_tmask = torch.zeros(n, S - 1)  # the logit at suffix column k of row i is column p_i + k of the full row
    for i, (length, p) in enumerate(zip(lengths, positions)):
        suffix_ids[i, :length - p] = ids[i, p:length]
        suffix_mask[i, :length - p] = 1
        prefix_mask[i, P - p:] = 1
        if i < n:
            width = min(S - 1, tmask.shape[1] - p)
            suffix_tmask[i, :width] = tmask[i, p:p + width]
    position_ids = torch.tensor(positions)[:, None] + torch.arange(S)[None, :]
    cols, target_mask, target_ids, kl_index = _keep_columns(suffix_tmask, suffix_ids, kl_position - positions[n], n)
    cache = None
    if P:
        per_row = []
        for i, p in enumerate(positions):
            if p == 0:
                per_row.append(None)
                continue
            out = model(input_ids=ids[i:i + 1, :p].to(device), use_cache=True)
            kv = getattr(out, "cache", None) or out.past_key_values
            per_row.append([(layer.keys, layer.values) for layer in kv.layers])
        template = next(r for r in per_row if r is not None)
        cache = []
        for layer, (k0, v0) in enumerate(template):
            ks = k0.new_zeros(rows, k0.shape[1], P, k0.shape[3])
            vs = v0.new_zeros(rows, v0.shape[1], P, v0.shape[3])
            for i, (r, p) in enumerate(zip(per_row, positions)):
                if r is not None:
                    ks[i, :, P - p:], vs[i, :, P - p:] = r[layer][0][0], r[layer][1][0]
            cache.append((ks, vs))
    inputs = {"input_ids": suffix_ids.to(device), "position_ids": position_ids.to(device),
              "attention_mask": torch.cat([prefix_mask, suffix_mask], 1).to(device)}
    return VStarBatch(inputs=inputs, subject_positions=[0] * rows, logit_positions=cols.to(device),
                      target_mask=target_mask.to(device), target_ids=target_ids.to(device), n_rewrite=n,
                      kl_index=kl_index, cache=cache)


def site_intervention(model: Any, adapter: ModelAdapter, layer: int, site: str) -> Callable[..., ContextManager]:
    """The default intervention: add delta to the FFN output (ROME) or the block output (MEMIT) at positions."""
    hook = {"ffn_output": ffn_output, "block_output": block_output}[site]
    return lambda delta, positions: hook(model, adapter, layer, positions, add=delta)


@contextmanager
def frozen(model: torch.nn.Module) -> Iterator[None]:
    """Turn off parameter grads while optimising delta, so backward computes only what delta needs."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


def optimise_target_value(model: Any, tok: Any, adapter: ModelAdapter, layer: int, request: EditRequest,
                          prefixes: Sequence[str], cfg: VStarConfig, site: str = "ffn_output",
                          intervention: Callable[..., ContextManager] | None = None,
                          init: torch.Tensor | None = None,
                          step_map: Callable[[torch.Tensor], torch.Tensor] | None = None,
                          clean_kl_reference: bool = False) -> TargetValue:
    """Optimise delta at `site` of `layer` (at the last subject token of every prompt) for request's o*.

    `intervention(delta, positions)` may replace the default hook (e.g. DiKE edits a disentangled component);
    then `init` (the reference vector for the clamp and weight decay) must be given. `step_map`, a linear map,
    makes the clamp and decay act on step_map(delta) instead of delta (DiKE: the step that reaches h_s).
    The KL reference is the next-token distribution at delta = 0; an intervention that already moves the model at
    delta = 0 (DiKE with ĥ_s substituted) gives `clean_kl_reference=True` to take it from the unhooked model.
    With captured steps (`cfg.uses_captured_steps`, CUDA) the intervention is entered once and its forward replayed:
    a shift that depends on delta must be given as a function of it (hooks.Shift), not a tensor made at entry.
    """
    device = next(model.parameters()).device
    moved = step_map or (lambda d: d)  # what the clamp and decay measure
    batch = build_batch(tok, request, prefixes, cfg.kl_prompt, device, model if cfg.uses_prefix_cache(device) else None)
    custom = intervention is not None
    if custom and init is None:
        raise ValueError("a custom intervention needs `init`, the vector the norm clamp is relative to")
    intervene = intervention or site_intervention(model, adapter, layer, site)
    width = init.numel() if custom else model.config.hidden_size
    delta = torch.zeros(width, device=device, requires_grad=True)
    kl_init = None
    n_fwd = n_bwd = 0
    loss_val = nll_val = nll_init = float("nan")
    n = batch.n_rewrite
    if clean_kl_reference:
        with torch.no_grad():
            logits = model(**batch.model_inputs(model), use_cache=False, logits_to_keep=batch.logit_positions).logits
        kl_init = logits[n, batch.kl_index].float().log_softmax(-1)
    if cfg.uses_captured_steps(device):
        with frozen(model), intervene(delta, batch.subject_positions) as site:
            if init is None or kl_init is None:  # delta = 0: the site's value at the bare prompt, the KL reference
                with torch.no_grad():
                    logits = model(**batch.model_inputs(model), use_cache=False,
                                   logits_to_keep=batch.logit_positions).logits
                init = site.value[0].detach().float() if init is None else init
                kl_init = logits[n, batch.kl_index].float().log_softmax(-1) if kl_init is None else kl_init
            run = _StaticSteps(model, batch, delta, init, kl_init, moved, cfg)
            steps, loss_val, nll_val, nll_init = run.optimise(request.case_id)
        n_fwd, n_bwd = steps, steps - 1
    else:
        opt = torch.optim.Adam([delta], lr=cfg.lr)
        with frozen(model):
            for step in range(cfg.steps):
                with intervene(delta, batch.subject_positions) as s:
                    logits = model(**batch.model_inputs(model), use_cache=False,
                                   logits_to_keep=batch.logit_positions).logits
                n_fwd += 1
                if init is None:
                    init = s.value[0].detach().float()  # bare prompt, delta = 0 at step 0
                if kl_init is None:  # delta = 0 at step 0
                    kl_init = logits[n, batch.kl_index].float().log_softmax(-1).detach()
                loss, nll = _loss(logits, batch, kl_init, cfg, moved(delta), init)
                loss_val, nll_val = loss.item(), nll.item()
                if step == 0:
                    nll_init = nll_val
                log.debug("case %s step %d loss %.3f nll %.3f", request.case_id, step, loss_val, nll_val)
                if loss_val < cfg.loss_threshold or step == cfg.steps - 1:
                    break
                opt.zero_grad()
                loss.backward()
                n_bwd += 1
                opt.step()
                with torch.no_grad():
                    max_norm = cfg.clamp_norm_factor * init.norm()
                    norm = moved(delta).norm()
                    if norm > max_norm:
                        delta.mul_(max_norm / norm)  # exact for a linear step_map
    with torch.no_grad():
        step_norm, limit = float(moved(delta).norm()), float(cfg.clamp_norm_factor * init.norm())
    return TargetValue(delta=delta.detach().float(), init=init.detach().float(), steps=n_fwd,
                       backward_passes=n_bwd, loss=loss_val, nll=nll_val,
                       nll_init=nll_init, step_norm=step_norm, limit=limit)


def _loss(logits: torch.Tensor, batch: VStarBatch, kl_init: torch.Tensor, cfg: VStarConfig, moved_delta: torch.Tensor,
          init: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, nll): the mean NLL of o* over the rewriting rows, the KL of the KL row, the decay of the step."""
    n = batch.n_rewrite
    logp = logits[:n].float().log_softmax(-1)
    tok_nll = -logp.gather(-1, batch.target_ids.unsqueeze(-1)).squeeze(-1)
    nll = ((tok_nll * batch.target_mask).sum(1) / batch.target_mask.sum(1)).mean()
    kl_logp = logits[n, batch.kl_index].float().log_softmax(-1)
    kl = cfg.kl_factor * F.kl_div(kl_init, kl_logp, log_target=True, reduction="sum")
    decay = cfg.weight_decay * moved_delta.norm() / init.norm() ** 2
    return nll + kl + decay, nll


class _StaticSteps:
    """The v* loop as fixed-shape steps with no host synchronisation inside: forward (through the intervention the
    caller has entered), loss, gradient, Adam (torch.optim.Adam's arithmetic, with its state in tensors) and the
    clamp (torch.where). On CUDA one step is captured into a CUDA graph and replayed; elsewhere it runs eagerly. The
    host reads the loss once per step for early stopping; the update that step made is then undone (`prev`), so the
    result is the eager loop's: the delta whose forward met the threshold, or the last one."""

    BETAS, EPS, WARMUP = (0.9, 0.999), 1e-8, 3

    def __init__(self, model: Any, batch: VStarBatch, delta: torch.Tensor, init: torch.Tensor,
                 kl_init: torch.Tensor, moved: Callable[[torch.Tensor], torch.Tensor], cfg: VStarConfig):
        self.model, self.batch, self.delta, self.init, self.kl_init, self.moved, self.cfg = (
            model, batch, delta, init, kl_init, moved, cfg)
        self.m, self.v = torch.zeros_like(delta), torch.zeros_like(delta)
        self.t = torch.zeros((), device=delta.device)
        self.prev = torch.zeros_like(delta)  # the delta this step's forward used
        self.out = torch.zeros(2, device=delta.device)  # its loss and NLL
        with torch.no_grad():
            self.max_norm = cfg.clamp_norm_factor * init.norm()
        self.graph: Any = None

    def step(self) -> None:
        b1, b2 = self.BETAS
        with torch.no_grad():
            self.prev.copy_(self.delta)
        logits = self.model(**self.batch.model_inputs(self.model), use_cache=False,
                            logits_to_keep=self.batch.logit_positions).logits
        loss, nll = _loss(logits, self.batch, self.kl_init, self.cfg, self.moved(self.delta), self.init)
        (grad,) = torch.autograd.grad(loss, self.delta)
        with torch.no_grad():
            self.out[0], self.out[1] = loss.detach(), nll.detach()
            self.t.add_(1)
            self.m.lerp_(grad, 1 - b1)
            self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            step_size = self.cfg.lr / (1 - b1 ** self.t)
            denom = (self.v.sqrt() / (1 - b2 ** self.t).sqrt()).add_(self.EPS)
            self.delta.sub_(step_size * self.m / denom)
            norm = self.moved(self.delta).norm()
            self.delta.mul_(torch.where(norm > self.max_norm, self.max_norm / norm, torch.ones_like(norm)))

    def capture(self) -> None:
        """Warm up on a side stream (allocator, cuBLAS workspaces), restore the state, capture one step."""
        state = [x.clone() for x in (self.delta, self.m, self.v, self.t)]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP):
                self.step()
        torch.cuda.current_stream().wait_stream(side)
        self._restore(state)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.step()
        except RuntimeError as e:  # an operation that cannot be captured (a host sync in a model's forward)
            log.warning("v* step not captured into a CUDA graph (%s); running it eagerly", str(e).splitlines()[0])
            self._restore(state)
            return
        self._restore(state)
        self.graph = graph

    def _restore(self, state: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for x, saved in zip((self.delta, self.m, self.v, self.t), state):
                x.copy_(saved)

    def optimise(self, case_id: str) -> tuple[int, float, float, float]:
        """(forward passes, final loss, final NLL, NLL at delta = 0)."""
        if self.delta.device.type == "cuda":
            self.capture()
        nll_init = float("nan")
        for step in range(self.cfg.steps):
            if self.graph is not None:
                self.graph.replay()
            else:
                self.step()
            loss_val, nll_val = self.out.tolist()
            if step == 0:
                nll_init = nll_val
            log.debug("case %s step %d loss %.3f nll %.3f", case_id, step, loss_val, nll_val)
            if loss_val < self.cfg.loss_threshold or step == self.cfg.steps - 1:
                with torch.no_grad():
                    self.delta.copy_(self.prev)
                return step + 1, loss_val, nll_val, nll_init
        raise ValueError("v* needs at least one step")
