import json
import re

import pytest

from ftlab.data import (DATASETS, DataError, TEMPLATES, arithmetic, fit_to_length, format_prompt, load_records,
                        read_jsonl, to_messages, to_prompt_completion)


@pytest.mark.parametrize("name,sizes", [
    ("email_subject", {"train": 900, "validation": 100, "test": 100}),
    ("definitions", {"train": 3000, "validation": 300, "test": 300}),
    ("preferences", {"train": 1500, "validation": 200, "test": 200}),
])
def test_embedded_splits_have_fixed_sizes_and_do_not_overlap(name, sizes):
    splits = {s: load_records(name, s) for s in sizes}
    assert {s: len(r) for s, r in splits.items()} == sizes
    key = (lambda r: r["prompt"]) if name == "preferences" else (lambda r: r["source"] + "|" + r["target"])
    seen = [set(map(key, r)) for r in splits.values()]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])


def test_email_data_is_clean_real_text():
    rows = load_records("email_subject", "train")
    assert all(120 <= len(r["source"]) <= 1200 and 2 <= len(r["target"].split()) <= 14 for r in rows)
    email = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
    assert not any(email.search(r["source"]) or r["source"].lstrip().startswith(">") for r in rows)
    assert not any(r["target"].lower().startswith("re:") for r in rows)


def test_preference_pairs_differ():
    rows = load_records("preferences", "test")
    assert all(r["chosen"] != r["rejected"] and r["prompt"].startswith("Define") for r in rows)


def test_arithmetic_is_seeded_and_its_worked_steps_are_right():
    a, b = arithmetic(50, seed=3), arithmetic(50, seed=3)
    assert a == b and a != arithmetic(50, seed=4)
    for r in a:
        assert r["answer"].endswith(f"= {r['result']}")
        for step in r["answer"].split(" = ")[1:]:  # every intermediate expression equals the result
            assert eval(step) == r["result"], r["answer"]
    splits = {s: {r["question"] for r in load_records("arithmetic", s)} for s in ("train", "validation", "test")}
    assert [len(q) for q in splits.values()] == [2000, 200, 200]
    assert not (splits["train"] & splits["test"]) and not (splits["train"] & splits["validation"])
    assert not (splits["validation"] & splits["test"])


def test_small_sums_keep_their_operands_and_splits_apart():
    from ftlab.catalog import arithmetic_records
    assert arithmetic_records("validation", n=5) == load_records("arithmetic", "validation", n=5)  # 999: the same
    small = {s: arithmetic_records(s, n=None if s != "train" else 300, max_value=30)
             for s in ("train", "validation", "test")}
    assert [len(v) for v in small.values()] == [300, 200, 200]
    questions = {s: {r["question"] for r in v} for s, v in small.items()}
    assert not (questions["train"] & questions["validation"]) and not (questions["validation"] & questions["test"])
    for r in small["validation"]:
        a, op, b = r["question"].removeprefix("What is ").rstrip("?").split()
        assert 10 <= int(a) <= 30 and (op == "*" or 10 <= int(b) <= 30), r["question"]
        assert r["source"] == r["question"] and r["target"] == r["answer"] and r["task"] == "arithmetic"
        assert all(eval(step) == r["result"] for step in r["answer"].split(" = ")[1:]), r["answer"]
        assert not r["answer"].split(" = ")[1].startswith("0 + 0 + ")  # by tens, not by (empty) hundreds


def test_unknown_dataset_and_split_are_named():
    with pytest.raises(DataError, match="dataset='nope' is unknown: one of"):
        load_records("nope")
    with pytest.raises(DataError, match="split='dev' is not allowed"):
        load_records("email_subject", "dev")


def test_hub_dataset_offline_is_a_clear_error():
    with pytest.raises(DataError, match="could not be loaded from the hub"):
        load_records("knkarthick/dialogsum", "train")


@pytest.mark.parametrize("content,match", [
    (b'{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": \n', r"bad\.jsonl:2: malformed JSON"),
    (b'{"prompt": "a"}\n', r"bad\.jsonl:1: missing field 'completion'"),
    (b'{"prompt": "a", "completion": "b"}\n{"prompt": "caf\xe9", "completion": "b"}\n', r"bad\.jsonl:2: not UTF-8"),
    (b'{"prompt": "a", "completion": "  "}\n', r"bad\.jsonl:1: field 'completion' is empty"),
    (b'["prompt", "completion"]\n', r"bad\.jsonl:1: a JSON object is required"),
    (b'\n\n', r"is empty"),
])
def test_malformed_files_say_file_and_line(tmp_path, content, match):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=match):
        load_records(str(path))


def test_own_jsonl_file_loads_with_a_held_out_split(tmp_path, capsys):
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(f'{{"prompt": "{i}+2?", "completion": "{i + 2}"}}\n' for i in range(20)))
    train, val = load_records(str(path)), load_records(str(path), "validation")
    assert (len(train), len(val)) == (18, 2) and not {r["source"] for r in train} & {r["source"] for r in val}
    assert load_records(str(path), "test") == val and load_records(str(path), seed=1) != train
    assert "18 records train, 2 are held out" in capsys.readouterr().out
    path.write_text('{"prompt": "2+2?", "completion": "4"}\n')
    with pytest.raises(DataError, match="at least 2 are needed"):
        load_records(str(path))


def test_own_file_with_split_fields_and_as_json(tmp_path):
    rows = [{"prompt": f"{i}?", "completion": str(i), "split": "validation" if i % 4 == 0 else "train"}
            for i in range(8)]
    jsonl, js = tmp_path / "a.jsonl", tmp_path / "a.json"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    js.write_text(json.dumps(rows))
    for path in (jsonl, js):
        assert [r["target"] for r in load_records(str(path), "validation")] == ["0", "4"]
        assert len(load_records(str(path))) == 6


def test_templates_and_record_shapes():
    rec = load_records("definitions", "test", n=1)[0]
    prompts = {format_prompt(rec, i) for i in range(len(TEMPLATES["define"]))}
    assert len(prompts) == len(TEMPLATES["define"]) and all(rec["source"] in p for p in prompts)
    pc = to_prompt_completion([rec])[0]
    assert pc["prompt"][0]["role"] == "user" and pc["completion"][0] == {"role": "assistant", "content": rec["target"]}
    plain = to_prompt_completion([rec], chat=False)[0]
    assert plain["prompt"].endswith("### Answer:\n") and plain["completion"] == rec["target"]
    assert [m["role"] for m in to_messages([rec])[0]["messages"]] == ["user", "assistant"]
    with pytest.raises(DataError, match="template=9"):
        format_prompt(rec, 9)
    assert set(DATASETS) >= {"email_subject", "definitions", "arithmetic", "preferences"}


def test_fit_to_length_keeps_the_completion(tokenizer):
    recs = fit_to_length(load_records("email_subject", "train", n=20), tokenizer, 128)
    for pc in to_prompt_completion(recs):
        n = len(tokenizer.apply_chat_template(pc["prompt"] + pc["completion"], tokenize=True, return_dict=True)["input_ids"])
        assert n <= 128
    with pytest.raises(DataError, match="seq_len=40 is too short"):
        fit_to_length(recs, tokenizer, 40)


def test_read_jsonl_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot be read"):
        read_jsonl(tmp_path / "none.jsonl")


def test_loss_batches_put_the_loss_on_the_completion_only(tokenizer):
    from ftlab.data import loss_batches
    recs = to_prompt_completion(load_records("arithmetic", "train", n=3))
    batches = loss_batches(tokenizer, recs, batch_size=2)
    assert [b["input_ids"].shape[0] for b in batches] == [2, 1]
    b = batches[0]
    for row in range(2):
        kept = b["input_ids"][row][b["labels"][row] != -100]
        assert tokenizer.decode(kept).startswith(recs[row]["completion"][0]["content"])
        assert (b["labels"][row][b["attention_mask"][row] == 0] == -100).all()  # no loss on padding


def test_general_text_for_perplexity():
    from ftlab.data import DataError, load_text
    test = load_text("moby_dick", "test")
    assert len(test) == 100 and all(300 <= len(t) <= 1200 for t in test)
    assert not set(test) & set(load_text("moby_dick", "train"))
    with pytest.raises(DataError, match="text='sotu'.*moby_dick"):
        load_text("sotu")
    with pytest.raises(DataError, match="split='dev'"):
        load_text("moby_dick", "dev")
