"""ftlab.prompting: the four prompts for sums (direct, zero-shot CoT, few-shot CoT, few-shot answers), the
demonstrations they show, token counts, and the sentences a comparison prints."""
import pytest

from ftlab.data import load_records
from ftlab.errors import ConfigError, DataError
from ftlab.prompting import (COT_TRIGGER, DIRECT_INSTRUCTION, SETTINGS, STRATEGIES, describe_strategies, mcnemar_p,
                             operation, pick_demonstrations, strategy_prompts, token_lengths)


@pytest.fixture(scope="module")
def sums():
    return load_records("arithmetic", "validation", n=3, seed=0), load_records("arithmetic", "train", n=30, seed=0)


def test_demonstrations_take_the_operations_in_turn(sums):
    _, train = sums
    demos = pick_demonstrations(train, 4)
    ops = [operation(d) for d in demos]
    assert set(ops[:3]) == {"+", "-", "*"} and ops[3] == ops[0]
    assert all(d in train for d in demos)
    assert operation({"source": "What is 12 * 34?"}) == "*" and operation({"source": "Hello"}) == ""


def test_each_strategy_builds_the_prompt_it_names(tokenizer, sums):
    held, train = sums
    demos = pick_demonstrations(train, 2)
    p = {s: strategy_prompts(tokenizer, held, s, demos if "few-shot" in s else None) for s in STRATEGIES}
    assert all(len(v) == len(held) for v in p.values())
    q = held[0]["source"]
    assert p["direct"][0].rstrip().endswith("assistant") and f"{q} {DIRECT_INSTRUCTION}" in p["direct"][0]
    assert p["zero-shot CoT"][0].endswith("<|im_start|>assistant\n" + COT_TRIGGER)  # the answer opens with it
    assert DIRECT_INSTRUCTION not in p["zero-shot CoT"][0]
    # few-shot: the demonstrations' questions, then worked answers or bare results, then the held-out question
    assert all(d["source"] in p["few-shot CoT"][0] and d["target"] in p["few-shot CoT"][0] for d in demos)
    assert all(d["target"] not in p["few-shot answers"][0] for d in demos)
    assert all(f"assistant\n{d['result']}<|im_end|>" in p["few-shot answers"][0] for d in demos)
    assert p["few-shot CoT"][0].index(demos[-1]["source"]) < p["few-shot CoT"][0].rindex(q)
    lengths = {s: sum(token_lengths(tokenizer, v)) for s, v in p.items()}
    assert lengths["few-shot CoT"] > lengths["few-shot answers"] > lengths["direct"]
    assert token_lengths(tokenizer, ["What is 2 + 2?"]) == [len(tokenizer("What is 2 + 2?")["input_ids"])]


def test_bad_inputs_name_the_field(tokenizer, sums):
    held, train = sums
    with pytest.raises(ConfigError, match="strategy='cot'.*one of") as e:
        strategy_prompts(tokenizer, held, "cot")
    assert e.value.field == "strategy"
    with pytest.raises(DataError, match="demonstrations=.*few-shot CoT") as e:
        strategy_prompts(tokenizer, held, "few-shot CoT")
    assert e.value.field == "demonstrations"
    with pytest.raises(DataError, match="zero-shot strategy shows none"):
        strategy_prompts(tokenizer, held, "direct", train[:2])
    with pytest.raises(DataError, match=r"demonstrations\[1\].*held-out questions"):
        strategy_prompts(tokenizer, held, "few-shot answers", [train[0], held[2]])
    with pytest.raises(DataError, match=r"records\[0\].*integer 'result'") as e:
        strategy_prompts(tokenizer, [{"source": "Define cat.", "target": "an animal"}], "direct")
    assert e.value.field == "records"
    with pytest.raises(DataError, match="k=31 is not allowed") as e:
        pick_demonstrations(train, 31)
    assert e.value.field == "k"
    with pytest.raises(DataError, match="texts="):
        token_lengths(tokenizer, "What is 2 + 2?")


def test_mcnemar_is_the_exact_binomial_test():
    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(3, 3) == 1.0
    assert mcnemar_p(5, 0) == pytest.approx(2 / 32) and mcnemar_p(0, 5) == mcnemar_p(5, 0)
    assert mcnemar_p(8, 1) == pytest.approx(2 * 10 / 512)
    with pytest.raises(ConfigError, match="only_first=-1"):
        mcnemar_p(-1, 2)


def _rows(right: dict, n: int = 12) -> list[dict]:
    """Rows where setting s gets its first right[s] questions right."""
    tokens = {"direct": 40, "zero-shot CoT": 38, "few-shot CoT": 200, "few-shot answers": 120, "fine-tuned": 30}
    return [{"setting": s, "correct": [i < right[s] for i in range(n)], "prompt tokens": tokens[s],
             "answer tokens": 40 if "CoT" in s else 5} for s in SETTINGS]


def test_the_sentences_follow_the_numbers():
    none = describe_strategies(_rows(dict.fromkeys(SETTINGS, 0)), 134_515_008)
    assert none[0] == "None of the settings got any of the 12 sums right."
    assert "did not help a 135M-parameter model" in none[-1] and "same questions" in none[1]
    assert "200 tokens on average, 5.0 times the direct prompt's 40" in none[4]
    helped = describe_strategies(_rows({"direct": 0, "zero-shot CoT": 6, "few-shot CoT": 3, "few-shot answers": 3,
                                        "fine-tuned": 1}), 7_000_000_000)
    assert helped[0] == "Most sums right: zero-shot CoT, 6 of 12."
    assert "more than asking for the number only (direct, 0)" in helped[1] and "unlikely by chance" in helped[1]
    assert "as many right" in helped[2] and "got more right for a 7.0B-parameter model (by 6 questions" in helped[-1]
    assert "fewer than the best prompt for the base model (zero-shot CoT, 6)" in helped[3]
    close = describe_strategies(_rows({"direct": 2, "zero-shot CoT": 1, "few-shot CoT": 3, "few-shot answers": 2,
                                       "fine-tuned": 3}), 134_515_008)
    assert close[0] == "Most sums right: few-shot CoT and fine-tuned, 3 of 12."
    assert "too few to tell the two apart" in close[2] and "by 1 question of 12" in close[-1]


def test_bad_rows_are_refused():
    rows = _rows(dict.fromkeys(SETTINGS, 1))
    with pytest.raises(ConfigError, match="one row for each of"):
        describe_strategies(rows[:-1], 10)
    rows[2]["correct"] = rows[2]["correct"][:5]
    with pytest.raises(ConfigError, match="the same held-out questions"):
        describe_strategies(rows, 10)
    rows[2]["correct"] = [1, 0]
    with pytest.raises(ConfigError, match="list of bools") as e:
        describe_strategies(rows, 10)
    assert e.value.field == "rows['few-shot CoT']['correct']"
    with pytest.raises(ConfigError, match="parameters=0"):
        describe_strategies(_rows(dict.fromkeys(SETTINGS, 1)), 0)
