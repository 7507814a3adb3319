"""Preference alignment (ftlab.align): data shapes, the rule-based reward, and each TRL trainer run for two steps
on a tiny model saved to a folder (the trainers load their model by name, as a lab does)."""
import math

import pytest

from ftlab import align
from ftlab.config import TrainConfig


def cfg_for(folder, tmp_path, **kw):
    return TrainConfig(**{"model": folder, "method": "lora", "max_steps": 2, "batch_size": 2, "seq_len": 64,
                          "learning_rate": 1e-3, "output_dir": str(tmp_path / "run"), **kw})


@pytest.mark.parametrize("negatives", ["sibling", "random"])
def test_preference_pairs_are_conversational_and_differ(negatives):
    pairs = align.preference_pairs("validation", n=12, negatives=negatives)
    assert len(pairs) == 12
    for p in pairs:
        assert [t["role"] for t in p["prompt"]] == ["user"]
        assert p["chosen"][0]["role"] == p["rejected"][0]["role"] == "assistant"
        assert p["chosen"][0]["content"] != p["rejected"][0]["content"]


def test_random_negatives_are_another_words_gloss():
    from ftlab.data import load_records
    words = load_records("definitions", "validation", n=10)
    glosses = {w["target"] for w in words}
    pairs = align.preference_pairs("validation", n=10, negatives="random")
    assert all(p["rejected"][0]["content"] in glosses for p in pairs)
    assert [p["chosen"][0]["content"] for p in pairs] == [w["target"] for w in words]


def test_bad_negatives_and_group_size_are_refused(tmp_path):
    with pytest.raises(ValueError, match="negatives='nearby' is not allowed"):
        align.preference_pairs(negatives="nearby")
    with pytest.raises(ValueError, match="batch_size=6 is not allowed: a multiple of num_generations=4"):
        align.train_grpo(TrainConfig(batch_size=6, output_dir=str(tmp_path)), [], align.arithmetic_reward)


@pytest.mark.parametrize("text,number", [("The answer is 7.", 7), ("2 + 5 = 7", 7), ("2 + 5 = **8**", 8),
                                         ("It is 1,024", 1024), ("12", 12), ("Seven", None), ("-3 is it", -3)])
def test_answer_number(text, number):
    assert align.answer_number(text) == number


def test_arithmetic_reward_reads_chat_and_plain_completions():
    plain = align.arithmetic_reward(["2 + 5 = 7", "2 + 5 = 8"], result=[7, 7])
    chat = align.arithmetic_reward([[{"role": "assistant", "content": "The answer is 7."}]], result=[7])
    assert plain == [1.0, 0.0] and chat == [1.0]


def test_sums_are_seeded_and_right():
    a, b = align.sums(20, seed=3), align.sums(20, seed=3)
    assert a == b
    for r in a:
        x, y = map(int, r["prompt"][0]["content"].removeprefix("What is ").split("?")[0].split(" + "))
        assert x + y == r["result"] and 1 <= x <= 10


def test_reward_model_trains_and_scores(tiny_folder, tmp_path):
    pairs = align.preference_pairs("train", n=4, negatives="random")
    model, tok, before, after, history = align.train_reward_model(cfg_for(tiny_folder, tmp_path), pairs, pairs[:2])
    assert set(before) == set(after) == {"loss", "accuracy", "margin"} and 0 <= after["accuracy"] <= 1
    assert len(align.series(history, "loss")) == 2
    scores = align.reward_scores(model, tok, pairs[:3], batch_size=4)  # a batch of 4 texts and one of 2
    assert len(scores) == 3 and all(math.isfinite(s) for pair in scores for s in pair)
    # padded batches score each conversation as it scores alone (the last real token, not a pad)
    import torch
    with torch.no_grad():
        for p, (chosen, rejected) in zip(pairs[:3], scores):
            for side, got in (("chosen", chosen), ("rejected", rejected)):
                ids = tok(tok.apply_chat_template(p["prompt"] + p[side], tokenize=False), return_tensors="pt",
                          add_special_tokens=False)
                assert got == pytest.approx(float(model(**ids).logits[0, 0]), abs=1e-4)


def test_dpo_trains_and_reports_margins(tiny_folder, tmp_path):
    pairs = align.preference_pairs("train", n=4, negatives="random")
    _, _, held_out, history = align.train_dpo(cfg_for(tiny_folder, tmp_path), pairs, pairs[:2], beta=0.1)
    assert len(align.series(history, "rewards/margins")) == 2
    assert set(held_out) == {"margin", "accuracy", "chosen", "rejected"}
    assert held_out["margin"] == pytest.approx(held_out["chosen"] - held_out["rejected"], abs=1e-5)


def test_dpo_with_a_runs_callback_still_tells_the_listeners(tiny_folder, tmp_path):
    """A Run hands its own ReportCallback over; listeners given beside it hear the run too (as train_sft does)."""
    from ftlab.report import ReportCallback
    run_heard, also_heard = [], []
    pairs = align.preference_pairs("train", n=4, negatives="random")
    align.train_dpo(cfg_for(tiny_folder, tmp_path), pairs, callback=ReportCallback([run_heard.append]),
                    listeners=[also_heard.append])
    steps = [e for e in also_heard if e.get("kind") == "step"]
    assert len(steps) == 2 and also_heard == run_heard


def test_grpo_trains_and_reports_the_mean_reward(tiny_folder, tmp_path):
    seen = []

    def reward(completions, result, **kw):
        seen.append(len(completions))
        return align.arithmetic_reward(completions, result)

    cfg = cfg_for(tiny_folder, tmp_path, batch_size=4)
    _, _, history = align.train_grpo(cfg, align.sums(4), reward, num_generations=2, max_completion_length=4)
    rewards = align.series(history, "reward")
    assert len(rewards) == 2 and all(0 <= v <= 1 for _, v in rewards)
    assert seen and all(n == 4 for n in seen)  # batch_size answers a step: 2 prompts × 2 generations
