"""Multiple-choice scoring by log-likelihood (ftlab.choice_eval): the score is the sum of the answer tokens'
log-probabilities, worked out here by hand from the model's logits; questions are built as documented; a
caller's mistake is a ValueError naming the field."""
import pytest
import torch

from ftlab.choice_eval import answer_logprobs, choice_accuracy, choice_questions, sibling_questions
from ftlab.data import load_records


def _by_hand(model, tokenizer, prompt, answer):
    """Sum of log softmax(logits at t-1)[token t] over the answer's tokens, one unpadded forward pass."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a = tokenizer(answer, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + a])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    total = 0.0
    for t in range(len(p), len(p) + len(a)):
        total += torch.log_softmax(logits[t - 1], dim=-1)[ids[0, t]].item()
    return total, len(a)


def test_log_likelihood_is_the_sum_of_the_answer_token_log_probs(tiny_model, tokenizer):
    run = "Define the verb \"run\" as a dictionary would."
    prompts = ["Define the noun \"cat\".", run, run]
    answers = ["a small domesticated feline", "move fast", "move fast by using your legs, never both feet on the ground"]
    # the shared prompt runs once and its two answers (of different lengths: right padding) ride on its cache;
    # batched or one at a time, the same numbers as a plain forward pass of prompt + answer
    got = answer_logprobs(tiny_model, tokenizer, prompts, answers, batch_size=2)
    for (prompt, answer), (total, count) in zip(zip(prompts, answers), got):
        want_total, want_count = _by_hand(tiny_model, tokenizer, prompt, answer)
        assert count == want_count and count > 1
        assert total == pytest.approx(want_total, abs=1e-4)
        assert total < 0
    one_by_one = answer_logprobs(tiny_model, tokenizer, prompts, answers, batch_size=1)
    assert [s for s, _ in one_by_one] == pytest.approx([s for s, _ in got], abs=1e-4)


def test_choice_questions_draw_same_part_of_speech_distractors():
    records = load_records("definitions", "test")
    qs = choice_questions(records, n=12, k=4, seed=3)
    pos = {r["target"]: r["pos"] for r in records}
    assert len(qs) == 12
    for q, r in zip(qs, records):
        assert q["choices"][q["answer"]] == r["target"] and q["source"] == r["source"]
        assert len(set(q["choices"])) == 4 and {pos[c] for c in q["choices"]} == {r["pos"]}
        assert r["source"] in q["question"]
    assert len({q["answer"] for q in qs}) > 1  # the right answer is not always in the same place
    assert qs == choice_questions(records, n=12, k=4, seed=3)  # seeded
    sib = sibling_questions("test", n=5)
    assert all(len(q["choices"]) == 2 and q["source"] in q["question"] for q in sib)


def test_choice_accuracy_picks_the_highest_sum_and_the_highest_mean(tiny_model, tokenizer):
    qs = choice_questions(load_records("definitions", "test"), n=3, k=3, seed=0)
    summary, per_question = choice_accuracy(tiny_model, tokenizer, qs, batch_size=4)
    assert summary["questions"] == 3 and summary["choices"] == 3 and summary["chance"] == pytest.approx(1 / 3)
    for p in per_question:
        assert p["logprob sums"][p["pick (sum)"]] == max(p["logprob sums"])
        assert p["means"][p["pick (mean)"]] == max(p["means"])
        assert p["means"] == pytest.approx([s / t for s, t in zip(p["logprob sums"], p["tokens"])])
    right = sum(p["pick (sum)"] == p["answer"] for p in per_question) / 3
    assert summary["accuracy (sum)"] == pytest.approx(right)


@pytest.mark.parametrize("call, field", [
    (lambda m, t: answer_logprobs(m, t, "Define cat.", ["a feline"]), "prompts"),
    (lambda m, t: answer_logprobs(m, t, ["Define cat."], ["a feline", "a dog"]), "answers"),
    (lambda m, t: answer_logprobs(m, t, ["Define cat."], [""]), "answers"),
    (lambda m, t: answer_logprobs(m, t, [""], ["a feline"]), "prompts"),
    (lambda m, t: answer_logprobs(m, t, ["Define cat."], ["a feline"], batch_size=0), "batch_size"),
    (lambda m, t: answer_logprobs(None, t, ["Define cat."], ["a feline"]), "model"),
    (lambda m, t: answer_logprobs(m, None, ["Define cat."], ["a feline"]), "tokenizer"),
    (lambda m, t: choice_accuracy(m, t, [{"question": "q", "choices": ["a", "b"], "answer": 2}]), "questions"),
    (lambda m, t: choice_accuracy(m, t, {"question": "q"}), "questions"),
])
def test_bad_inputs_name_the_field(tiny_model, tokenizer, call, field):
    with pytest.raises(ValueError, match=field) as e:
        call(tiny_model, tokenizer)
    assert e.value.field == field


def test_bad_question_settings_name_the_field():
    records = load_records("definitions", "test", n=8)
    for kwargs, field in [({"k": 1}, "k"), ({"k": 50}, "k"), ({"n": 0}, "n"), ({"n": 9}, "n"),
                          ({"distractors": "hard"}, "distractors")]:
        with pytest.raises(ValueError, match=field) as e:
            choice_questions(records, **kwargs)
        assert e.value.field == field
    no_pos = [{"source": r["source"], "target": r["target"]} for r in records]
    with pytest.raises(ValueError, match="distractors='same_pos'"):
        choice_questions(no_pos)
    assert len(choice_questions(no_pos, distractors="random", k=4)) == 8
