"""Tiny offline tokenizers and models for unit tests: no download, two spacing conventions.

- "gpt2" style: byte-level BPE, spaces folded into the next token ("Ġ"), no BOS.
- "llama" style: Metaspace ("▁") pre-tokenizer with a BOS token prepended, like LLaMA/sentencepiece.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from editors.models import tiny_model

_WORDS = ("The capital of France is Paris . Danielle Darrieux speaks French and English . "
          "Berlin Germany Rome Italy Madrid Spain London England Tokyo Japan Ottawa Canada "
          "was born in the city of died works for plays the guitar piano native language mother tongue "
          "official religion Islam Christianity located continent Europe Asia Africa citizen country "
          "head of state president founded by employer position held member of sports team "
          "a an is of in on at by for with to from as that which who what where when why how it they")


def _corpus() -> list[str]:
    words = _WORDS.split()
    lines = [_WORDS]
    for i in range(len(words)):  # every adjacent pair and triple, so BPE learns merges across a vocabulary
        lines.append(" ".join(words[i:i + 3]))
        lines.append(" ".join(w.lower() for w in words[i:i + 2]))
    return lines


@lru_cache(maxsize=None)
def tiny_tokenizer(style: str = "gpt2") -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if style == "gpt2":
        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tk.train_from_iterator(_corpus(), trainer)
        return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                       pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    if style == "llama":
        tk = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
        tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tk.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                                      initial_alphabet=[f"<0x{b:02X}>" for b in range(256)], show_progress=False)
        tk.train_from_iterator(_corpus(), trainer)
        bos = tk.token_to_id("<s>")
        tk.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                          special_tokens=[("<s>", bos)])
        return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                       pad_token="</s>")
    raise ValueError(f"unknown tiny tokenizer style {style!r}; use gpt2 or llama")


TOKENIZER_STYLE = {"gpt2": "gpt2", "gptj": "gpt2", "llama": "llama"}


def tiny_model_and_tokenizer(family: str, seed: int = 0) -> tuple[Any, Any]:
    tok = tiny_tokenizer(TOKENIZER_STYLE[family])
    return tiny_model(family, tok, seed=seed), tok
