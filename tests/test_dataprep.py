"""Data quality and augmentation (ftlab.dataprep)."""
import random

import pytest

from ftlab import dataprep


def test_dedupe_drops_exact_and_near_copies():
    rows = [{"source": "Hello, World!", "target": "hi"}, {"source": "hello world", "target": "Hi."},
            {"source": "Hello world", "target": "bye"}, {"source": "Hello, World!", "target": "hi"}]
    kept, dropped = dataprep.dedupe(rows)
    assert kept == [rows[0], rows[2]] and dropped == [rows[1], rows[3]]


@pytest.mark.parametrize("text,clean,counts", [
    ("mail jane.doe@example.org now", "mail [EMAIL] now", {"email": 1, "phone": 0}),
    ("call +1 (555) 013-2277.", "call [PHONE].", {"email": 0, "phone": 1}),
    ("ring 020 7946 0018 or 555-0123", "ring [PHONE] or [PHONE]", {"email": 0, "phone": 2}),
    ("on 2002-08-23 12:57:00 from 216.12.34.56, (c) 1997-2002", "on 2002-08-23 12:57:00 from 216.12.34.56, (c) 1997-2002",
     {"email": 0, "phone": 0}),
    ("order 12 units at 3.50 each", "order 12 units at 3.50 each", {"email": 0, "phone": 0}),
    ("see http://x.org/item/123-456-7890 today", "see http://x.org/item/123-456-7890 today", {"email": 0, "phone": 0}),
])
def test_scrub_pii(text, clean, counts):
    assert dataprep.scrub_pii(text) == (clean, counts)


def test_augmentations_change_the_text_reproducibly():
    text = "Please send the meeting notes to the team before Friday."
    for name, fn in dataprep.AUGMENTATIONS.items():
        a, b = fn(text, rng=random.Random(1)), fn(text, rng=random.Random(1))
        assert a == b, name
    assert dataprep.word_swap(text, rng=random.Random(1)).split() != text.split()
    assert sorted(dataprep.word_swap(text, rng=random.Random(1)).split()) == sorted(text.split())
    deleted = dataprep.word_deletion(text, p=0.5, rng=random.Random(1)).split()
    assert 1 <= len(deleted) < len(text.split()) and all(w in text.split() for w in deleted)
    replaced = dataprep.synonym_replace(text, n=2, rng=random.Random(1))
    changed = [(a, b) for a, b in zip(text.split(), replaced.split()) if a != b]
    assert 1 <= len(changed) <= 2
    assert all(b.lower().strip(".") in dataprep.synonyms()[a.lower().strip(".")] for a, b in changed)
    assert dataprep.typo_noise(text, p=0.3, rng=random.Random(1)) != text


def test_augment_keeps_targets_and_refuses_unknown():
    rows = [{"source": "the quick brown fox jumps", "target": "fox"}]
    out = dataprep.augment(rows, "word swap")
    assert out[0]["target"] == "fox" and out[0]["source"] != rows[0]["source"]
    with pytest.raises(ValueError, match="how='back translation' is not allowed"):
        dataprep.augment(rows, "back translation")


def test_few_shot_prompts_put_demonstrations_before_the_question(tokenizer):
    from ftlab.data import few_shot_prompts, load_records
    demos, recs = load_records("definitions", "train", n=2), load_records("definitions", "test", n=1)
    zero, two = few_shot_prompts(tokenizer, recs, [])[0], few_shot_prompts(tokenizer, recs, demos)[0]
    assert two.endswith(zero.split("<|im_start|>user")[-1])
    assert all(d["target"] in two for d in demos) and not any(d["target"] in zero for d in demos)
    assert two.count("<|im_start|>assistant") == 3
