"""ftlab.align_sweeps: β parsing, the policy-to-reference KL, the β sweep's reuse of a measured run, the gameable
reward, the GRPO probe, and the sentences worded by the numbers. A tiny random model (tests/conftest.py) runs
the code paths; none of it judges quality."""
import pytest
import torch

from ftlab import align
from ftlab import align_sweeps as S
from ftlab.config import TrainConfig


def lora(model, moved: bool):
    """The tiny model with LoRA; moved=True: B drawn at random (init_lora_weights=False), so πθ ≠ πref."""
    import copy

    from peft import LoraConfig, get_peft_model
    torch.manual_seed(1)
    return get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules="all-linear", init_lora_weights=not moved))


def test_parse_betas():
    assert S.parse_betas("dpo_betas", "0.05, 0.1,0.5") == [0.05, 0.1, 0.5]
    assert S.parse_betas("dpo_betas", 0.5) == [0.5]  # papermill -p dpo_betas 0.5 passes a float
    for bad in ("0.1,0", "0.1,0.1", "a,b", "-1", "nan", "", 0, True, None):
        with pytest.raises(ValueError, match="dpo_betas="):
            S.parse_betas("dpo_betas", bad)


def test_policy_kl_is_zero_at_the_start_and_counts_answer_tokens_only(tiny_model, tokenizer):
    prompts = [[{"role": "user", "content": "What is 2 + 5?"}], [{"role": "user", "content": "Define a cat, please."}]]
    answers = ["7", "A small domesticated carnivorous mammal with soft fur."]
    assert S.policy_kl(lora(tiny_model, moved=False), tokenizer, prompts, answers) == pytest.approx(0, abs=1e-6)
    model = lora(tiny_model, moved=True)
    both = S.policy_kl(model, tokenizer, prompts, answers, batch_size=2)  # padded batch
    one = [S.policy_kl(model, tokenizer, [p], [a]) for p, a in zip(prompts, answers)]
    assert both > 0 and all(k > 0 for k in one)
    # the token-weighted mean of the single answers: padding and the prompts' tokens are not counted
    head = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    n = [len(tokenizer(h + a, add_special_tokens=False)["input_ids"]) - len(tokenizer(h, add_special_tokens=False)
                                                                              ["input_ids"]) for h, a in zip(head, answers)]
    assert both == pytest.approx((one[0] * n[0] + one[1] * n[1]) / sum(n), rel=1e-4)


def test_policy_kl_refuses_a_plain_model_and_mismatched_answers(tiny_model, tokenizer):
    prompts = [[{"role": "user", "content": "Hi"}]]
    with pytest.raises(ValueError, match="model=.*peft model"):
        S.policy_kl(tiny_model, tokenizer, prompts, ["hello"])
    with pytest.raises(ValueError, match="answers: 1 strings are needed"):
        S.policy_kl(lora(tiny_model, True), tokenizer, prompts, ["a", "b"])


def test_length_reward_pays_for_words_not_for_being_right():
    r = S.length_reward(["10", "Let me think about this sum very carefully before I answer it",
                         [{"role": "assistant", "content": "two words"}]])
    assert r == [1 / S.LENGTH_TARGET, 1.0, 2 / S.LENGTH_TARGET]
    with pytest.raises(ValueError, match="completions="):
        S.length_reward("10")


def test_beta_sweep_reuses_a_measured_run_and_trains_the_others(tiny_folder, tmp_path):
    cfg = TrainConfig(model=tiny_folder, method="lora", max_steps=2, batch_size=2, seq_len=64, learning_rate=1e-3,
                      output_dir=str(tmp_path / "run"))
    pairs = align.preference_pairs("train", n=4, negatives="random")
    known = {"beta": 0.1, "kl": 123.0}
    heard = []
    rows = S.dpo_beta_sweep(cfg, pairs, pairs[:2], [0.5, 0.1], done={0.1: known},
                            listeners_for=lambda b: [lambda e, b=b: heard.append(b)])
    assert rows[1] is known and rows[0]["beta"] == 0.5 and set(heard) == {0.5}
    r = rows[0]
    assert r["log_ratio_margin"] == pytest.approx(r["margin"] / 0.5) and r["kl"] >= 0 and 0 <= r["accuracy"] <= 1
    assert r["log_ratio_chosen"] - r["log_ratio_rejected"] == pytest.approx(r["log_ratio_margin"], abs=1e-4)
    with pytest.raises(ValueError, match="betas="):
        S.dpo_beta_sweep(cfg, pairs, pairs, "0.1")


def test_grpo_probe_measures_the_policy(tiny_model, tokenizer):
    tests = align.sums(3, seed=2)
    p = S.grpo_probe(lora(tiny_model, True), tokenizer, tests, S.length_reward, max_new_tokens=4)
    assert p["reward"] == pytest.approx(sum(S.length_reward(p["answers"])) / 3)
    assert p["accuracy"] == sum(align.arithmetic_reward(p["answers"], [t["result"] for t in tests])) / 3
    assert p["kl"] > 0 and len(p["answers"]) == 3
    with pytest.raises(ValueError, match="tests: each row needs its 'result'"):
        S.grpo_probe(tiny_model, tokenizer, [{"prompt": tests[0]["prompt"]}], S.length_reward, 4)


def row(beta, kl, margin, acc=0.8):
    return {"beta": beta, "kl": kl, "log_ratio_margin": margin, "accuracy": acc}


def test_describe_beta_sweep_follows_the_numbers():
    ordered = S.describe_beta_sweep([row(0.5, 0.01, 2.0), row(0.05, 0.2, 9.0), row(0.1, 0.1, 5.0)], steps=30)
    assert "falls as β rises" in ordered and "shrinks from +9.00 at β=0.05 to +2.00 at β=0.5" in ordered
    tangled = S.describe_beta_sweep([row(0.05, 0.01, 1.0), row(0.5, 0.02, 1.5, acc=0.5)], steps=4)
    assert "does not fall steadily" in tangled and "after 4 steps" in tangled and "does not shrink" in tangled
    assert "50% to 80%" in tangled and "changed which pairs" in tangled
    assert "nothing to compare" in S.describe_beta_sweep([row(0.1, 0.1, 1.0)], steps=4)
    with pytest.raises(ValueError, match="kl=None"):
        S.describe_beta_sweep([{"beta": 0.1, "accuracy": 1, "log_ratio_margin": 1}], steps=4)


def test_describe_gaming_follows_the_numbers():
    before = {"reward": 0.3, "accuracy": 0.5}
    hacked = S.describe_gaming(before, {"reward": 0.9, "accuracy": 0.4, "kl": 0.3},
                               {"reward": 0.5, "accuracy": 0.5, "kl": 0.05}, beta=0.5, steps=20)
    assert "reward hacking" in hacked and "stayed nearer the reference" in hacked and "0.30 -> 0.90" in hacked
    assert "true accuracy 50%" in hacked and "still lost accuracy" not in hacked
    slowed = S.describe_gaming(before, {"reward": 0.9, "accuracy": 0.0, "kl": 0.6},
                               {"reward": 0.7, "accuracy": 0.3, "kl": 0.2}, beta=1.0, steps=4)
    assert "still lost accuracy" in slowed and "learned in 4 steps" in slowed
    flat = S.describe_gaming(before, {"reward": 0.31, "accuracy": 0.5, "kl": 0.01},
                             {"reward": 0.32, "accuracy": 0.5, "kl": 0.02}, beta=0.5, steps=4)
    assert "barely moved" in flat and "raise hack_steps" in flat and "no clear difference" in flat
    along = S.describe_gaming(before, {"reward": 0.6, "accuracy": 0.7, "kl": 0.1},
                              {"reward": 0.7, "accuracy": 0.7, "kl": 0.05}, beta=0.5, steps=4)
    assert "rose with it" in along and "no clear difference" in along
