"""The data experiments of lab 13: the synonyms task, task mixes, label noise, steps a set takes, and the
Self-Instruct round's ROUGE-L filter."""
import json

import pytest

from ftlab import datastudy as D
from ftlab.catalog import DATA_DIR
from ftlab.errors import FtlabError


def test_synonym_records_are_wordnets_and_the_splits_do_not_overlap():
    table = json.loads((DATA_DIR / "synonyms.json").read_text())
    splits = {s: D.synonym_records(s) for s in ("train", "validation", "test")}
    assert len(splits["test"]) == len(splits["validation"]) == 200 and len(splits["train"]) > 1000
    words = {s: {r["word"] for r in rows} for s, rows in splits.items()}
    assert not (words["train"] & words["test"]) and not (words["train"] & words["validation"])
    for r in splits["test"][:50]:
        first, second = r["target"].split(", ")
        assert [first, second] == table[r["word"]][:2] and r["word"] in r["source"] and r["task"] == "synonyms"
    assert D.synonym_records("test", n=3) == splits["test"][:3]
    assert D.synonym_records("test", n=3, seed=5) == splits["test"][:3]  # only training data is reshuffled
    assert D.synonym_records("train", n=3, seed=5) != D.synonym_records("train", n=3)


def test_task_mix_takes_equal_shares_of_each_task():
    mix = D.task_mix(["email_subject", "arithmetic", "synonyms"], 10, seed=1)
    kinds = [r["task"] for r in mix]
    assert len(mix) == 10 and sorted(kinds.count(k) for k in set(kinds)) == [3, 3, 4]
    assert kinds != sorted(kinds)  # shuffled together
    assert {r["dataset"] for r in mix} == {"email_subject", "arithmetic", "synonyms"}
    assert D.task_mix(["email_subject", "arithmetic", "synonyms"], 10, seed=1) == mix


def test_noisy_targets_give_other_examples_answers_and_say_how_many():
    recs = D.task_records("definitions", "train", n=20)
    noisy, changed = D.with_noisy_targets(recs, 0.5, seed=3)
    assert changed == 10 and len(noisy) == 20
    targets = {r["target"] for r in recs}
    diff = [(a, b) for a, b in zip(noisy, recs) if a["target"] != b["target"]]
    assert len(diff) == 10 and all(a["target"] in targets and a["source"] == b["source"] for a, b in diff)
    assert recs == D.task_records("definitions", "train", n=20)  # the input is not changed
    assert D.with_noisy_targets(recs, 0.0) == (recs, 0)


def test_steps_for_a_set():
    assert D.steps_for(50, 2, 4) == 25 and D.steps_for(16, 1.0, 4) == 4 and D.steps_for(1, 0.1, 4) == 1
    assert D.steps_for(10, 1, 4) == 3


def test_nearest_is_rouge_l_to_the_closest_instruction():
    score, closest = D.nearest("Name two synonyms of the word happy.", D.SEED_INSTRUCTIONS)
    assert closest == "Name two synonyms of the word \"quick\"." and 0.7 < score < 1
    assert D.nearest(D.SEED_INSTRUCTIONS[0], D.SEED_INSTRUCTIONS) == (1.0, D.SEED_INSTRUCTIONS[0])


def test_self_instruct_round_keeps_new_instructions_and_drops_copies(monkeypatch):
    from ftlab.models import load_tokenizer
    tok = load_tokenizer("smollm2-135m-instruct")
    replies = ["1. Name two synonyms of the word \"quick\".",                     # a copy of a seed
               "Translate the sentence 'good morning' into French.\nMore text",  # new: kept (first line only)
               "Translate the sentence 'good morning' into French please.",      # close to the one just kept
               "Hi",                                                             # too short
               ""]                                                               # nothing
    monkeypatch.setattr(D, "sample", lambda model, tokenizer, prompts, *a, **k: replies[:len(prompts)])
    pool = list(D.SEED_INSTRUCTIONS)
    import torch
    rows = D.self_instruct_round(torch.nn.Linear(1, 1), tok, pool, 5)
    assert [r["kept"] for r in rows] == [False, True, False, False, False]
    assert rows[1]["candidate"] == "Translate the sentence 'good morning' into French."
    assert pool == D.SEED_INSTRUCTIONS + [rows[1]["candidate"]]
    assert rows[0]["why dropped"].startswith("near duplicate (ROUGE-L 1.00") and rows[0]["closest in pool"] == \
        D.SEED_INSTRUCTIONS[6]
    assert rows[2]["closest in pool"] == rows[1]["candidate"] and rows[3]["why dropped"] == "too short (1 words)"


def test_instruction_prompts_show_shots_of_the_pool():
    from ftlab.models import load_tokenizer
    tok = load_tokenizer("smollm2-135m-instruct")
    prompts = D.instruction_prompts(tok, D.SEED_INSTRUCTIONS, 4, shots=3, seed=2)
    assert len(prompts) == 4 and len(set(prompts)) > 1
    for p in prompts:
        assert sum(t in p for t in D.SEED_INSTRUCTIONS) == 3 and p.rstrip().endswith("assistant")


@pytest.mark.parametrize("call, field", [
    (lambda: D.task_records("poetry"), "task"),
    (lambda: D.synonym_records("dev"), "split"),
    (lambda: D.synonym_records("test", n=0), "n"),
    (lambda: D.task_mix("arithmetic", 4), "tasks"),
    (lambda: D.task_mix(["arithmetic", "arithmetic"], 4), "tasks"),
    (lambda: D.task_mix(["arithmetic", "synonyms"], 1), "n_total"),
    (lambda: D.with_noisy_targets(D.synonym_records("test", n=4), 1.5), "rate"),
    (lambda: D.with_noisy_targets(D.synonym_records("test", n=1), 0.5), "records"),
    (lambda: D.with_noisy_targets({"source": "a", "target": "b"}, 0.5), "records"),
    (lambda: D.steps_for(10, 0, 4), "epochs"),
    (lambda: D.steps_for(0, 1, 4), "n_examples"),
    (lambda: D.steps_for(10, 1, True), "batch_size"),
    (lambda: D.nearest("a task", "one instruction"), "pool"),
    (lambda: D.self_instruct_round(None, None, tuple(D.SEED_INSTRUCTIONS), 2), "pool"),
    (lambda: D.self_instruct_round(None, None, [], 2, threshold=0), "threshold"),
])
def test_bad_arguments_name_their_field(call, field):
    with pytest.raises(FtlabError) as err:
        call()
    assert getattr(err.value, "field", None) == field or f"{field}=" in str(err.value), str(err.value)


def test_sample_draws_repeatably_through_generate():
    from ftlab.models import load_model
    model, tok = load_model("smollm2-135m-instruct")
    prompts = D.instruction_prompts(tok, D.SEED_INSTRUCTIONS, 2, seed=1)
    first = D.sample(model, tok, prompts, max_new_tokens=8, seed=3)
    assert len(first) == 2 and first == D.sample(model, tok, prompts, max_new_tokens=8, seed=3)
    with pytest.raises(FtlabError) as err:
        D.sample(model, tok, prompts, max_new_tokens=8, temperature=0)
    assert "temperature=" in str(err.value)
