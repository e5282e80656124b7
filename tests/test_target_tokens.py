"""The four places that build target-token batches (FT's loss, the scorer, v*, DiKE's states) take them from one
function (editors.text.pad_pairs of encode_pair's tokens) and agree token for token, on every tiny family's tokenizer
and on SmolLM2's, also where the prompt already ends in whitespace (the shared rule adds no second space)."""
import pytest
from transformers import AutoTokenizer

from editors.base import EditRequest
from editors.dike.states import target_batch as states_batch
from editors.ft import target_batch as ft_batch
from editors.locate.vstar import build_batch
from editors.models import smollm2_dir, tiny_model
from editors.text import encode_pair
from editors.tiny import TOKENIZER_STYLE, tiny_tokenizer
from harness.scoring import score_pairs

CASES = [("The capital of France is", "France", "Paris"),
         ("Danielle Darrieux speaks", "Danielle Darrieux", "French and English"),
         ("The mother tongue of Danielle Darrieux is", "Danielle Darrieux", "Tokyo"),
         ("Berlin is located in the continent of", "Berlin", "Europe"),
         ("The official religion of Rome is", "Rome", "Christianity"),
         ("The capital of France is ", "France", "Paris"),  # already ends in a space: no second one
         ("Berlin is located in the continent of\n", "Berlin", "Europe")]


def _tokenizer(family):
    if family == "smollm2":
        return AutoTokenizer.from_pretrained(smollm2_dir())
    return tiny_tokenizer(TOKENIZER_STYLE[family])


@pytest.mark.parametrize("family", [*TOKENIZER_STYLE, "smollm2"])
def test_every_target_batch_builder_takes_the_shared_rule_s_tokens(family):
    tok = _tokenizer(family)
    model = tiny_model("llama", tok)  # any model with this vocabulary: only the scorer runs it
    for prompt, subject, target in CASES:
        p_ids, want = encode_pair(tok, prompt, target)
        req = EditRequest("c", prompt, subject, target)
        labels = ft_batch(tok, [req])["labels"][0]
        vb = build_batch(tok, req, [], "{} is a", "cpu")
        sb = states_batch(tok, [prompt], [subject], [target])
        got = {"ft": labels[labels != -100].tolist(),
               "scorer": list(score_pairs(model, tok, [(prompt, target)])[0].target_ids),
               "vstar": vb.target_ids[0][vb.target_mask[0] > 0].tolist(),
               "dike states": sb.target_ids[0][sb.target_mask[0] > 0].tolist()}
        assert got == {k: want for k in got}, (family, prompt, target)
        # the rows read prompt tokens then target tokens, and the subject position is the same token in both
        v_row = vb.inputs["input_ids"][0][vb.inputs["attention_mask"][0] > 0].tolist()
        s_row = sb.inputs["input_ids"][0][sb.inputs["attention_mask"][0] > 0].tolist()
        assert v_row == s_row == p_ids + want, (family, prompt)
        s_pos = sb.subject_positions[0] - (len(sb.inputs["input_ids"][0]) - len(s_row))
        assert vb.subject_positions[0] == s_pos < len(p_ids)
        assert subject.split()[-1].endswith(tok.decode(p_ids[s_pos]).strip()), (family, prompt)
