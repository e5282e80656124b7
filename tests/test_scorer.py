"""The batched scorer against one-prompt-at-a-time direct model calls, on both tokenizer styles."""
import pytest
import torch

from editors.text import encode_pair
from editors.tiny import tiny_model_and_tokenizer
from harness.scoring import score_pairs

PAIRS = [
    ("The capital of France is", "Paris"),
    ("Danielle Darrieux speaks", "French and English"),  # multi-token target
    ("The official religion of Italy is", "Christianity"),
    ("Tokyo is located in the continent of", "Asia"),
    ("The head of state of Canada was born in", "the city of London"),
    ("Berlin", "Germany"),
]


def direct_scores(model, tok, prompt, target):
    """Unpadded single forward pass over the whole text; log-probs of the target tokens."""
    n_prompt = len(tok(prompt)["input_ids"])
    ids = tok(prompt + " " + target, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    targets = ids[0, n_prompt:]
    pos = torch.arange(n_prompt - 1, ids.shape[1] - 1)
    return targets.tolist(), logp[pos, targets].tolist(), logp[pos].argmax(-1).tolist()


@pytest.mark.parametrize("family", ["gpt2", "llama", "gptj"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_batched_scores_equal_direct_calls(family, padding_side):
    model, tok = tiny_model_and_tokenizer(family)
    batched = score_pairs(model, tok, PAIRS, batch_size=4, padding_side=padding_side)
    multi = 0
    for (prompt, target), s in zip(PAIRS, batched):
        ids, lps, am = direct_scores(model, tok, prompt, target)
        assert list(s.target_ids) == ids
        assert torch.allclose(torch.tensor(s.logprobs), torch.tensor(lps), atol=1e-5, rtol=0)
        assert list(s.argmax) == am
        multi += len(ids) > 1
    assert multi >= 2  # the check covers multi-token targets


def test_llama_style_bos_only_before_prompt_and_gpt2_style_leading_space():
    _, ltok = tiny_model_and_tokenizer("llama")
    p, t = encode_pair(ltok, "The capital of France is", "Paris")
    assert p[0] == ltok.bos_token_id and ltok.bos_token_id not in p[1:] + t
    assert ltok.convert_ids_to_tokens(t)[0].startswith("▁")
    _, gtok = tiny_model_and_tokenizer("gpt2")
    p, t = encode_pair(gtok, "The capital of France is", "Paris")
    assert gtok.eos_token_id not in p  # no BOS for GPT-2 style
    assert gtok.decode(t) == " Paris"
    p2, t2 = encode_pair(gtok, "The capital of France is ", "Paris")  # prompt already ends in a space
    assert gtok.decode(p2 + t2) == "The capital of France is Paris"


def test_probability_and_accuracy_from_logprobs():
    model, tok = tiny_model_and_tokenizer("gpt2")
    s = score_pairs(model, tok, [("Danielle Darrieux speaks", "French and English")])[0]
    nll = -sum(s.logprobs) / len(s.logprobs)
    assert s.mean_nll == pytest.approx(nll)
    assert s.prob == pytest.approx(torch.tensor(-nll).exp().item(), rel=1e-6)
    assert s.token_accuracy == sum(a == b for a, b in zip(s.argmax, s.target_ids)) / len(s.target_ids)
