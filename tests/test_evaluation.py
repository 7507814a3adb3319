"""The offline `evaluate` modules (ftlab/metrics) against values worked out by hand."""
import math

import pytest

from ftlab.evaluation import load_metric


def test_rouge_l_and_lsum_on_reordered_sentences():
    r = load_metric("rouge").compute(predictions=["He left early.\nShe stayed."],
                                     references=["She stayed.\nHe left early."])
    assert r["rouge1"] == 1.0 and r["rougeLsum"] == 1.0
    assert r["rougeL"] == pytest.approx(0.6)  # LCS "he left early": 3 of 5 tokens each way


def test_bleu_matches_its_definition():
    b = load_metric("bleu").compute(predictions=["the cat sat on the mat", "hello there"],
                                    references=["the cat sat on the mat", "hello there friend"])
    # clipped precisions 8/8, 6/6, 4/5, 3/4; 8 tokens against 9: brevity penalty exp(1 - 9/8)
    assert b["precisions"] == pytest.approx([1.0, 1.0, 0.8, 0.75])
    assert b["brevity_penalty"] == pytest.approx(math.exp(1 - 9 / 8))
    assert b["bleu"] == pytest.approx(math.exp(1 - 9 / 8) * (0.8 * 0.75) ** 0.25)
    assert load_metric("bleu").compute(predictions=["x"], references=["y z"])["bleu"] == 0.0


def test_exact_match_normalises_case_space_and_optionally_punctuation():
    em = load_metric("exact_match")
    assert em.compute(predictions=[" Paris ", "London."], references=["paris", "london"])["exact_match"] == 0.5
    assert em.compute(predictions=["London."], references=["london"], ignore_punctuation=True)["exact_match"] == 1.0


def test_perplexity_module_agrees_with_the_loss(tiny_model, tokenizer):
    import torch
    texts = ["The whale swam on.", "Call me Ishmael, said the sailor."]
    out = load_metric("perplexity").compute(predictions=texts, model=tiny_model, tokenizer=tokenizer)
    ids = tokenizer(texts[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        loss = tiny_model(input_ids=ids, labels=ids).loss.item()
    assert out["perplexities"][0] == pytest.approx(math.exp(loss), rel=1e-5)
    assert out["mean_perplexity"] == pytest.approx(sum(out["perplexities"]) / 2)
    with pytest.raises(ValueError, match="model="):
        load_metric("perplexity").compute(predictions=texts)


def test_unknown_metric_names_the_known_ones():
    with pytest.raises(ValueError, match="metric='bertscore'.*'bleu'"):
        load_metric("bertscore")
