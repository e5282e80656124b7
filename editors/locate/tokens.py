"""Locate the subject's last token in tokenised prompts via character offsets.

Offsets make this independent of BPE spacing conventions ("ĠParis", "▁Paris"), BOS tokens and padding side.
"""
from __future__ import annotations

from typing import Any, Sequence


def subject_char_span(prompt: str, subject: str, search_from: int = 0) -> tuple[int, int]:
    """(start, end) characters of the first occurrence of `subject` at or after `search_from`."""
    start = prompt.find(subject, search_from)
    if start < 0 or not subject:
        raise ValueError(f"prompt {prompt!r} does not contain its subject {subject!r}; "
                         "fix the record so the prompt includes the subject verbatim")
    return start, start + len(subject)


def tokenize(tok: Any, texts: Sequence[str], padding_side: str = "right", offsets: bool = False) -> Any:
    """Padded batch encoding (pt tensors) with the requested padding side, restoring the tokenizer's own."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if offsets and not getattr(tok, "is_fast", False):
        raise ValueError("locating subjects needs a fast tokenizer (offset mappings); load it with use_fast=True")
    old = tok.padding_side
    tok.padding_side = padding_side
    try:
        return tok(list(texts), return_tensors="pt", padding=True, return_offsets_mapping=offsets)
    finally:
        tok.padding_side = old


def token_at_char(offsets: Any, mask: Any, char: int) -> int | None:
    """Index of the real (non-pad, non-special) token whose character span contains `char`."""
    for j, ((s, e), m) in enumerate(zip(offsets.tolist(), mask.tolist())):
        if m and s < e and s <= char < e:
            return j
    return None


def subject_last_token_positions(tok: Any, prompts: Sequence[str], subjects: Sequence[str],
                                 padding_side: str = "right",
                                 search_from: Sequence[int] | None = None) -> tuple[Any, list[int]]:
    """Tokenise `prompts` as one padded batch; return (encoding, index of each prompt's last subject token).

    `search_from[i]` skips a context prefix so a subject word inside the prefix is not picked.
    The encoding has input_ids and attention_mask (no offset mapping) and positions are in padded coordinates.
    """
    if len(prompts) != len(subjects):
        raise ValueError(f"{len(prompts)} prompts but {len(subjects)} subjects")
    spans = [subject_char_span(p, s, (search_from or [0] * len(prompts))[i])
             for i, (p, s) in enumerate(zip(prompts, subjects))]
    enc = tokenize(tok, prompts, padding_side, offsets=True)
    offsets = enc.pop("offset_mapping")
    positions = []
    for i, (_, end) in enumerate(spans):
        j = token_at_char(offsets[i], enc["attention_mask"][i], end - 1)
        if j is None:
            raise ValueError(f"subject {subjects[i]!r} of prompt {prompts[i]!r} maps to no token "
                             "(was the prompt truncated?)")
        positions.append(j)
    return enc, positions


def last_token_positions(attention_mask: Any) -> list[int]:
    """Index of the last real token per row, for either padding side."""
    idx = attention_mask.shape[1] - 1 - attention_mask.flip(1).int().argmax(dim=1)
    return idx.tolist()
