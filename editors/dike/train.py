"""Training the KRD module once per model (METHOD.md §5.1).

Samples are plain dataclasses (the harness converts krd_train records into them). h_s and h_r are cached;
the knowledge constraint needs passes of the frozen LLM with a component substituted for h_s, run in chunks of
`llm_batch` rows whose gradients are collected on detached copies of z_r and z_u. With `cache_states` the blocks
up to l run once per row (states.PrefixCache) and every later pass runs only the blocks after l.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from editors.adapters import ModelAdapter
from editors.dike.krd import KRD, KRDConfig, contrastive_loss, reconstruction_loss
from editors.dike.states import PrefixCache, subject_and_relation_states, substituted_nll, suffix_nll, target_batch
from editors.locate.fingerprint import model_fingerprint
from editors.text import encode_pair

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KRDSample:
    """One (s, r, o) fact with some of the subject's other facts (p(s, r'), o')."""

    prompt: str
    subject: str
    target: str
    siblings: tuple[tuple[str, str], ...] = ()


@dataclass
class KRDTrainConfig:
    layer: int  # l: h_s is the residual stream after this block (the edit layer)
    repr_layer: int  # l_r: h_r is the last prompt token after this block
    tau: float = 0.1  # [open] InfoNCE temperature
    alpha: float = 1.0  # [open] weight of L_con
    beta: float = 0.05  # [open] weight of L_rec (README, 'The committed KRD': the runs behind 0.05)
    no_ctr: bool = False  # ablation w/o CTR
    no_kc: bool = False  # ablation w/o KC
    siblings: int = 10  # |N|, 1-10: at most this many of the sample's sibling facts in L_con (all if fewer)
    batch_size: int = 32
    llm_batch: int = 32  # rows per live LLM pass
    con_per_batch: int = 0  # samples per batch that get L_con (a random subset: batches are shuffled); 0: all
    cache_states: bool = True  # run the blocks up to l once per row (PrefixCache); False: full passes every time
    epochs: int = 2
    lr: float = 1e-4  # AdamW (README, 'The committed KRD')
    weight_decay: float = 0.0
    val_fraction: float = 0.05
    patience: int = 1  # epochs without validation improvement before stopping
    warmup_epochs: int = 0  # cheap epochs of L_ctr + β L_rec alone (cached states, no LLM pass) before the full loss
    seed: int = 0
    bias: bool = False
    init: str = "split"  # "random" (small normal) or "split" (KRD.split_init: ĥ_s = h_s exactly at the start)

    def __post_init__(self) -> None:
        if not 1 <= self.siblings <= 10:
            raise ValueError(f"siblings (|N|) must be 1-10, got {self.siblings}")
        if self.init not in ("random", "split"):
            raise ValueError(f"init must be 'random' or 'split', got {self.init!r}")

    @property
    def variant(self) -> str:
        flags = [f for f in ("no_ctr", "no_kc") if getattr(self, f)]
        return "+".join(flags) or "full"


def data_fingerprint(samples: Sequence[KRDSample]) -> str:
    h = hashlib.sha256()
    for s in samples:
        h.update(json.dumps(asdict(s), sort_keys=True).encode())
    return h.hexdigest()[:16]


def split_by_subject(samples: Sequence[KRDSample], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Train/validation indices with disjoint subjects."""
    subjects = sorted({s.subject for s in samples})
    random.Random(seed).shuffle(subjects)
    n_val = max(1, round(len(subjects) * val_fraction)) if len(subjects) > 1 else 0
    val_subjects = set(subjects[:n_val])
    train = [i for i, s in enumerate(samples) if s.subject not in val_subjects]
    val = [i for i, s in enumerate(samples) if s.subject in val_subjects]
    return train, val


def cached_states(model: Any, tok: Any, adapter: ModelAdapter, cfg: KRDTrainConfig, samples: Sequence[KRDSample],
                  cache: Path | None, quiet: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(h_s, h_r) of every sample's prompt, read from / written to a safetensors file."""
    from common.cache import finite_tensors, read_tensor_entry, write_tensor_entry

    t = read_tensor_entry(cache, lambda t: finite_tensors(t) or (None if t["h_s"].shape[0] == len(samples) else
                                                                  "another number of samples")) if cache else None
    if t is not None:
        return t["h_s"], t["h_r"]
    t0 = time.perf_counter()
    h_s, h_r = subject_and_relation_states(model, tok, adapter, cfg.layer, cfg.repr_layer,
                                           [s.prompt for s in samples], [s.subject for s in samples], quiet=quiet)
    log.info("cached h_s/h_r of %d samples in %.1f s", len(samples), time.perf_counter() - t0)
    if cache is not None:
        write_tensor_entry(cache, {"h_s": h_s, "h_r": h_r})
    return h_s, h_r


@dataclass
class LossTerms:
    ctr: float = 0.0
    con_r: float = 0.0
    con_u: float = 0.0
    rec: float = 0.0
    total: float = 0.0

    def add(self, other: "LossTerms", w: float) -> None:
        for k in asdict(self):
            setattr(self, k, getattr(self, k) + w * getattr(other, k))


def _siblings(sample: KRDSample, k: int, seed: int) -> list[tuple[str, str]]:
    sib = list(sample.siblings)
    random.Random(f"{seed}:{sample.prompt}").shuffle(sib)
    return sib[:k]


def constraint_rows(batch: Sequence[KRDSample], siblings: int, seed: int) -> list[tuple[str, str, str, str, int]]:
    """(prompt, subject, target, component, sample index) of every L_con row: o under z_r, each o' under z_u."""
    rows = []
    for i, s in enumerate(batch):
        rows.append((s.prompt, s.subject, s.target, "r", i))
        rows += [(p, s.subject, t, "u", i) for p, t in _siblings(s, siblings, seed)]
    return rows


def rows_nll(model: Any, tok: Any, adapter: ModelAdapter, layer: int, rows: Sequence[tuple], vectors: torch.Tensor | None,
             prefix: PrefixCache | None = None) -> torch.Tensor:
    """NLL of each row's target with vectors[i] in place of its h_s (None: clean), one pass for the rows given."""
    device = next(model.parameters()).device
    tb = target_batch(tok, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], device)
    if prefix is None:
        return substituted_nll(model, adapter, layer, tb, vectors)
    return suffix_nll(model, adapter, layer, tb, prefix.states(tb), vectors)


def constraint_loss(model: Any, tok: Any, adapter: ModelAdapter, cfg: KRDTrainConfig, batch: Sequence[KRDSample],
                    z_r: torch.Tensor, z_u: torch.Tensor, backward_scale: float | None,
                    prefix: PrefixCache | None = None) -> tuple[float, float]:
    """L_con = NLL(o | z_r in p(s,r)) + NLL(o' | z_u in p(s,r')), each a mean over its rows (every o' of every
    sample counts once).

    With backward_scale set, gradients w.r.t. z_r and z_u (times the scale) are accumulated in z_r.grad/z_u.grad
    of the detached leaves passed in, one LLM chunk at a time.
    """
    rows = constraint_rows(batch, cfg.siblings, cfg.seed)
    # Chunks of rows of like length: left padding to a chunk's longest row was 37 % of the tokens on krd_train.
    rows.sort(key=lambda r: sum(map(len, encode_pair(tok, r[0], r[2]))))
    n_r = sum(1 for r in rows if r[3] == "r")
    n_u = len(rows) - n_r
    tot = {"r": 0.0, "u": 0.0}
    for c in range(0, len(rows), cfg.llm_batch):
        chunk = rows[c:c + cfg.llm_batch]
        vecs = torch.stack([(z_r if r[3] == "r" else z_u)[r[4]] for r in chunk])
        nll = rows_nll(model, tok, adapter, cfg.layer, chunk, vecs, prefix)
        is_r = torch.tensor([r[3] == "r" for r in chunk], device=nll.device)
        part_r = nll[is_r].sum() / max(n_r, 1)
        part_u = nll[~is_r].sum() / max(n_u, 1)
        tot["r"] += part_r.item()
        tot["u"] += part_u.item()
        if backward_scale is not None:
            (backward_scale * (part_r + part_u)).backward()
    return tot["r"], tot["u"]


def batch_step(model: Any, tok: Any, adapter: ModelAdapter, krd: KRD, cfg: KRDTrainConfig,
               batch: Sequence[KRDSample], h_s: torch.Tensor, h_r: torch.Tensor, train: bool,
               prefix: PrefixCache | None = None) -> LossTerms:
    """Losses of one batch; with train=True, gradients land in krd's parameters (no optimiser step)."""
    with torch.set_grad_enabled(train):
        z_r, z_u, h_hat = krd(h_s, h_r)
        ctr = contrastive_loss(z_r, z_u, h_s, cfg.tau) if not cfg.no_ctr else h_s.new_zeros(())
        rec = reconstruction_loss(h_s, h_hat)
        local = ctr + cfg.beta * rec
    terms = LossTerms(ctr=ctr.item(), rec=rec.item())
    if not cfg.no_kc and cfg.alpha > 0:
        m = min(cfg.con_per_batch or len(batch), len(batch))  # an unbiased subsample when the LLM passes dominate
        zr_leaf = z_r[:m].detach().requires_grad_(train)
        zu_leaf = z_u[:m].detach().requires_grad_(train)
        with torch.set_grad_enabled(train):
            terms.con_r, terms.con_u = constraint_loss(model, tok, adapter, cfg, batch[:m], zr_leaf, zu_leaf,
                                                       cfg.alpha if train else None, prefix)
        if train:
            # chain the collected dL_con/dz into the KRD graph
            for z, leaf in ((z_r, zr_leaf), (z_u, zu_leaf)):
                if leaf.grad is not None:
                    local = local + (z[:m] * leaf.grad).sum()
    terms.total = terms.ctr + cfg.alpha * (terms.con_r + terms.con_u) + cfg.beta * terms.rec
    if train:
        local.backward()
    return terms


@dataclass
class TrainResult:
    krd: KRD
    history: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # train steps / epochs
    best_val: float = math.inf
    epochs_run: int = 0
    seconds: float = 0.0
    val_indices: list[int] = field(default_factory=list)
    stopped_early: bool = False
    prefix: PrefixCache | None = None  # the states after block l of every L_con row seen (reused by diagnostics)


def evaluate(model: Any, tok: Any, adapter: ModelAdapter, krd: KRD, cfg: KRDTrainConfig,
             samples: Sequence[KRDSample], idx: Sequence[int], h_s: torch.Tensor, h_r: torch.Tensor,
             prefix: PrefixCache | None = None) -> LossTerms:
    out = LossTerms()
    krd.eval()
    for b in range(0, len(idx), cfg.batch_size):
        sel = list(idx[b:b + cfg.batch_size])
        t = batch_step(model, tok, adapter, krd, cfg, [samples[i] for i in sel], h_s[sel], h_r[sel], train=False,
                       prefix=prefix)
        out.add(t, len(sel) / len(idx))
    return out


def train_krd(model: Any, tok: Any, adapter: ModelAdapter, samples: Sequence[KRDSample], cfg: KRDTrainConfig,
              state_cache: Path | None = None, resume: dict | None = None,
              on_epoch: Callable[[TrainResult, dict], None] | None = None, quiet: bool = False) -> TrainResult:
    """Train a KRD on `samples`; `resume` is a state from on_epoch's second argument (weights, optimiser, history).

    on_epoch(result, state) is called after every epoch, so the caller can checkpoint and a later run resume.
    """
    if len(samples) < 2:
        raise ValueError("KRD training needs at least 2 samples (InfoNCE contrasts subjects in a batch)")
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    h_s_all, h_r_all = (t.to(device) for t in cached_states(model, tok, adapter, cfg, samples, state_cache, quiet))
    train_idx, val_idx = split_by_subject(samples, cfg.val_fraction, cfg.seed)
    torch.manual_seed(cfg.seed)
    krd = KRD(KRDConfig(d=h_s_all.shape[1], bias=cfg.bias))
    if cfg.init == "split":
        krd.split_init()
    krd = krd.to(device)
    opt = torch.optim.AdamW(krd.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    prefix = PrefixCache(model, adapter, cfg.layer) if cfg.cache_states else None
    result = TrainResult(krd=krd, history={"steps": [], "epochs": []}, val_indices=val_idx, prefix=prefix)
    best_state = None
    start_epoch = 0
    bad_epochs = 0
    if resume:
        krd.load_state_dict(resume["weights"])
        opt.load_state_dict(resume["optimizer"])
        result.history = resume["history"]
        result.best_val = resume["best_val"]
        best_state = resume.get("best_weights")
        start_epoch = result.epochs_run = resume["epoch"]
        bad_epochs = resume.get("bad_epochs", 0)
        result.seconds = resume.get("seconds", 0.0)
        log.info("resuming KRD training at epoch %d", start_epoch + 1)
    t0 -= result.seconds
    krd.train()
    if not resume and cfg.warmup_epochs:
        warm = dataclasses.replace(cfg, no_kc=True)
        for w in tqdm(range(cfg.warmup_epochs), desc="KRD warm-up (L_ctr + L_rec)", disable=quiet, unit="epoch"):
            order = list(train_idx)
            random.Random(cfg.seed * 1000 - w - 1).shuffle(order)
            terms = LossTerms()
            for b in range(0, len(order), cfg.batch_size):
                sel = order[b:b + cfg.batch_size]
                if len(sel) < 2:
                    continue
                opt.zero_grad()
                t = batch_step(model, tok, adapter, krd, warm, [samples[i] for i in sel], h_s_all[sel], h_r_all[sel],
                               train=True)
                opt.step()
                terms.add(t, len(sel) / len(order))
            result.history.setdefault("warmup", []).append({"epoch": w + 1, **asdict(terms)})
        log.info("warm-up done: ctr %.3f rec %.4f", terms.ctr, terms.rec)
    for epoch in range(start_epoch, cfg.epochs):
        if bad_epochs >= cfg.patience:
            break
        order = list(train_idx)
        random.Random(cfg.seed * 1000 + epoch).shuffle(order)
        bar = tqdm(range(0, len(order), cfg.batch_size), desc=f"KRD epoch {epoch + 1}/{cfg.epochs}", disable=quiet,
                   unit="batch")
        epoch_terms = LossTerms()
        krd.train()
        for b in bar:
            sel = order[b:b + cfg.batch_size]
            if len(sel) < 2:
                continue  # a one-sample batch has no other subjects to contrast
            opt.zero_grad()
            t = batch_step(model, tok, adapter, krd, cfg, [samples[i] for i in sel], h_s_all[sel], h_r_all[sel],
                           train=True, prefix=prefix)
            opt.step()
            epoch_terms.add(t, len(sel) / len(order))
            result.history["steps"].append({"epoch": epoch + 1, **asdict(t)})
            bar.set_postfix(ctr=f"{t.ctr:.3f}", con_r=f"{t.con_r:.2f}", con_u=f"{t.con_u:.2f}", rec=f"{t.rec:.3f}")
        val = evaluate(model, tok, adapter, krd, cfg, samples, val_idx, h_s_all, h_r_all, prefix) if val_idx \
            else epoch_terms
        result.history["epochs"].append({"epoch": epoch + 1, "train": asdict(epoch_terms), "val": asdict(val)})
        log.info("epoch %d: train total %.4f, val total %.4f (ctr %.3f con_r %.3f con_u %.3f rec %.4f)",
                 epoch + 1, epoch_terms.total, val.total, val.ctr, val.con_r, val.con_u, val.rec)
        if val.total < result.best_val:
            result.best_val = val.total
            best_state = {k: v.detach().clone() for k, v in krd.state_dict().items()}
            bad_epochs = 0
        else:
            bad_epochs += 1
        result.epochs_run = epoch + 1
        result.seconds = time.perf_counter() - t0
        if on_epoch is not None:
            on_epoch(result, {"weights": krd.state_dict(), "optimizer": opt.state_dict(), "history": result.history,
                              "best_val": result.best_val, "best_weights": best_state, "epoch": epoch + 1,
                              "bad_epochs": bad_epochs, "seconds": result.seconds})
        if bad_epochs >= cfg.patience:
            result.stopped_early = True
            log.info("early stop: validation loss did not improve for %d epoch(s)", bad_epochs)
            break
    if best_state is not None:
        krd.load_state_dict(best_state)
    krd.eval()
    result.seconds = time.perf_counter() - t0
    return result


def default_state_cache(model: Any, cfg: KRDTrainConfig, samples: Sequence[KRDSample]) -> Path:
    from editors.models import cache_dir

    return (cache_dir() / "krd" / model_fingerprint(model) /
            f"states-l{cfg.layer}-r{cfg.repr_layer}-{data_fingerprint(samples)}.safetensors")
