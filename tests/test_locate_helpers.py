"""Test fixture: tiny models trained for a few seconds on a handful of facts.

Randomly initialised models predict a near-uniform distribution that no value vector can steer; a model that has
learned a few facts has the subject-to-answer path editing relies on, like a real LM.
"""
from functools import lru_cache

import torch

from editors.tiny import tiny_model_and_tokenizer

FACTS = ["The capital of France is Paris", "The capital of Germany is Berlin", "The capital of Italy is Rome",
         "The capital of Japan is Tokyo", "The capital of Spain is Madrid", "The official language of France is French",
         "The official language of Japan is Japan", "Danielle Darrieux speaks French",
         "Berlin is located in the continent of Europe", "Tokyo is located in the continent of Asia",
         "Paris is the capital of France", "London is located in England"]


@lru_cache(maxsize=None)
def _trained_state(family: str, steps: int = 150):
    model, tok = tiny_model_and_tokenizer(family)
    model.train().requires_grad_(True)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    tok.padding_side = "right"
    enc = tok(FACTS, return_tensors="pt", padding=True)
    labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
    torch.manual_seed(0)
    for _ in range(steps):
        opt.zero_grad()
        model(**enc, labels=labels).loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def trained_tiny(family: str):
    """(model, tok): a fresh tiny model with the trained weights (eval mode, no grads)."""
    model, tok = tiny_model_and_tokenizer(family)
    model.load_state_dict(_trained_state(family))
    model.eval().requires_grad_(False)
    return model, tok
