"""The four places that build target-token batches (FT's loss, the scorer, v*, DiKE's states) agree with
editors.text.encode_pair token for token, on both tiny tokenizer styles and on SmolLM2's."""
import pytest
from transformers import AutoTokenizer

from editors.base import EditRequest
from editors.dike.states import target_batch as states_batch
from editors.ft import target_batch as ft_batch
from editors.locate.vstar import build_batch
from editors.models import smollm2_dir, tiny_model
from editors.text import encode_pair
from editors.tiny import tiny_tokenizer
from harness.scoring import score_pairs

CASES = [("The capital of France is", "France", "Paris"),
         ("Danielle Darrieux speaks", "Danielle Darrieux", "French and English"),
         ("The mother tongue of Danielle Darrieux is", "Danielle Darrieux", "Tokyo"),
         ("Berlin is located in the continent of", "Berlin", "Europe"),
         ("The official religion of Rome is", "Rome", "Christianity")]


def _tokenizer(style):
    if style == "smollm2":
        return AutoTokenizer.from_pretrained(smollm2_dir())
    return tiny_tokenizer(style)


@pytest.mark.parametrize("style", ["gpt2", "llama", "smollm2"])
def test_every_target_batch_builder_takes_the_shared_rule_s_tokens(style):
    tok = _tokenizer(style)
    model = tiny_model("llama", tok)  # any model with this vocabulary: only the scorer runs it
    for prompt, subject, target in CASES:
        want = encode_pair(tok, prompt, target)[1]
        req = EditRequest("c", prompt, subject, target)
        labels = ft_batch(tok, [req])["labels"][0]
        vb = build_batch(tok, req, [], "{} is a", "cpu")
        sb = states_batch(tok, [prompt], [subject], [target])
        got = {"ft": labels[labels != -100].tolist(),
               "scorer": list(score_pairs(model, tok, [(prompt, target)])[0].target_ids),
               "vstar": vb.target_ids[0][vb.target_mask[0] > 0].tolist(),
               "dike states": sb.target_ids[0][sb.target_mask[0] > 0].tolist()}
        assert got == {k: want for k in got}, (style, prompt, target)
