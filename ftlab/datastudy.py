"""What the data does to instruction tuning: a fourth task (synonyms, from the embedded WordNet list) so a mix can
hold one task out (FLAN's test of unseen tasks), task mixes, label noise for the quality experiment, the steps a
set of n examples takes, and one Self-Instruct round (Wang et al., 2022): the model writes new instructions from
examples of the pool, and a ROUGE-L filter drops those too close to one it already has.

Written here because the stack has no Self-Instruct pipeline; the ROUGE-L is rouge_score's (what `evaluate`'s
rouge module wraps), the generation transformers' (through ftlab.evaluation.generate)."""
from __future__ import annotations

import json
import math
import random
import re
from functools import lru_cache

import torch
from rouge_score import rouge_scorer

from ftlab.catalog import DATA_DIR, DATASETS, load_records
from ftlab.errors import DataError, check_int, check_number, check_strings
from ftlab.evaluation import generate
from ftlab.records import check_task_records, check_tokenizer

SYNONYMS = "synonyms"
LIST_MARK = re.compile(r"^\s*(?:\d+\s*[.):]|[-*#]+|task\s*\d*\s*:)\s*", re.IGNORECASE)  # "3.", "- ", "Task 9:"
TASKS = (*[name for name, (_, task, _) in DATASETS.items() if task != "preference"], SYNONYMS)
# Self-Instruct's seed tasks are written by people; these are the four the BITS Pilani lecture shows from Wang et
# al. (2022), and four of this course's own tasks in words
SEED_INSTRUCTIONS = [
    "I am planning a 7-day trip to Seattle. Can you make a detailed plan for me?",
    "Is there anything I can eat for breakfast that doesn't include eggs, yet includes protein and has roughly "
    "700-1000 calories?",
    "Given a set of numbers, find all possible subsets that sum to a given number.",
    "Give me a phrase that I can use to express I am very happy.",
    "Write a short subject line for this e-mail.",
    "Give a dictionary definition of the word \"harbour\".",
    "Name two synonyms of the word \"quick\".",
    "Compute 345 + 278 step by step.",
]


@lru_cache(maxsize=1)
def _synonym_pool() -> tuple:
    """The WordNet synonym list as (word, synonyms) pairs with at least two synonyms, in a fixed shuffled order:
    the first 200 are the test split, the next 200 validation, the rest training (as the other embedded sets)."""
    table = json.loads((DATA_DIR / "synonyms.json").read_text())
    pool = sorted((w, tuple(s)) for w, s in table.items() if len(s) >= 2 and w.isalpha())
    random.Random(0).shuffle(pool)
    return tuple(pool)


def synonym_records(split: str = "train", n: int | None = None, seed: int = 0) -> list[dict]:
    """Task records "name two synonyms of <word>" -> "<s1>, <s2>" (WordNet's), as load_records returns records.
    The instruction is the source itself (task "synonyms" has no other templates)."""
    start = {"test": 0, "validation": 200, "train": 400}.get(split)
    if start is None:
        raise DataError(f"split={split!r} is not allowed: one of ['train', 'validation', 'test']", field="split")
    seed = check_int("seed", seed, 0, error=DataError)
    pool = list(_synonym_pool()[start:start + (200 if split != "train" else len(_synonym_pool()))])
    if split == "train" and seed:
        random.Random(seed).shuffle(pool)
    if n is not None:
        pool = pool[:check_int("n", n, 1, error=DataError)]
    return [{"source": f"Name two synonyms of the word \"{w}\".", "target": f"{s[0]}, {s[1]}", "task": SYNONYMS,
             "word": w} for w, s in pool]


def task_records(name: str, split: str = "train", n: int | None = None, seed: int = 0) -> list[dict]:
    """Records of one of TASKS: the embedded data sets through load_records, the synonyms from their list; each
    says which in "dataset" (its "task" is the kind of task, e.g. "summarize" for email_subject)."""
    if name not in TASKS:
        raise DataError(f"task={name!r} is not allowed: one of {list(TASKS)}", field="task")
    rows = synonym_records(split, n, seed) if name == SYNONYMS else load_records(name, split, n=n, seed=seed)
    return [{**r, "dataset": name} for r in rows]


def task_mix(names, n_total: int, seed: int = 0) -> list[dict]:
    """n_total training records in equal shares of the named tasks (the first tasks get one more when n_total does
    not divide), shuffled together."""
    names = check_strings("tasks", names, error=DataError)
    if len(set(names)) != len(names):
        raise DataError(f"tasks={names!r} is not allowed: each task once", field="tasks")
    n_total = check_int("n_total", n_total, len(names), error=DataError)
    rows = []
    for i, name in enumerate(names):
        share = n_total // len(names) + (i < n_total % len(names))
        rows += task_records(name, "train", n=share, seed=seed)
    random.Random(seed).shuffle(rows)
    return rows


def with_noisy_targets(records, rate: float, seed: int = 0) -> tuple[list[dict], int]:
    """A copy of the records in which a share `rate` of them has the target of another record (chosen at random,
    never its own): wrong answers, as careless labelling or scraped data gives. Returns (records, how many
    changed)."""
    records = check_task_records(records, "records")
    rate = check_number("rate", rate, 0, 1)
    if len(records) < 2 and rate > 0:
        raise DataError(f"records: {len(records)} record cannot be given another's target: at least 2 are needed",
                        field="records")
    rng = random.Random(check_int("seed", seed, 0))
    out = [dict(r) for r in records]
    changed = rng.sample(range(len(out)), round(rate * len(out)))
    for i in changed:
        j = rng.choice([k for k in range(len(records)) if records[k]["target"] != records[i]["target"]] or [i])
        out[i]["target"] = records[j]["target"]
    return out, sum(a["target"] != b["target"] for a, b in zip(out, records))


def steps_for(n_examples: int, epochs: float, batch_size: int) -> int:
    """Optimizer steps that go `epochs` times through n_examples at batch_size (at least one)."""
    n_examples = check_int("n_examples", n_examples, 1)
    epochs = check_number("epochs", epochs, 0, lo_open=True)
    batch_size = check_int("batch_size", batch_size, 1)
    return max(1, math.ceil(n_examples * epochs / batch_size))


def _rouge_l():
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def nearest(candidate: str, pool) -> tuple[float, str]:
    """(ROUGE-L F, instruction) of the instruction in `pool` closest to `candidate`."""
    pool = check_strings("pool", pool, error=DataError)
    scorer = _rouge_l()
    return max((scorer.score(p, candidate)["rougeL"].fmeasure, p) for p in pool)


def instruction_prompts(tokenizer, pool, n: int, shots: int = 3, seed: int = 0) -> list[str]:
    """n chat prompts, each listing `shots` instructions drawn from the pool and asking for one new task."""
    check_tokenizer(tokenizer)
    pool = check_strings("pool", pool, error=DataError)
    n = check_int("n", n, 1)
    shots = check_int("shots", shots, 1, len(pool))
    rng = random.Random(check_int("seed", seed, 0))
    prompts = []
    for _ in range(n):
        listed = "\n".join(f"{k + 1}. {t}" for k, t in enumerate(rng.sample(pool, shots)))
        ask = (f"Here are some tasks people gave an assistant:\n{listed}\n\nWrite one new task for the assistant, on "
               "a subject none of these is about. Reply with the task only.")
        prompts.append(tokenizer.apply_chat_template([{"role": "user", "content": ask}], tokenize=False,
                                                     add_generation_prompt=True))
    return prompts


def sample(model, tokenizer, prompts, max_new_tokens: int = 48, seed: int = 0, temperature: float = 0.8,
           top_p: float = 0.9) -> list[str]:
    """Sampled completions of already-templated prompts (ftlab.evaluation.generate at a temperature), repeatable
    through `seed`. Self-Instruct samples (Wang et al. used temperature 0.7); greedy decoding makes a small model
    copy an instruction from its prompt."""
    torch.manual_seed(check_int("seed", seed, 0))
    return generate(model, tokenizer, prompts, max_new_tokens, temperature=temperature, top_p=top_p)


def _why_dropped(text: str, score: float, threshold: float, min_words: int, max_words: int) -> str:
    words = len(text.split())
    if words < min_words:
        return f"too short ({words} words)"
    if words > max_words:
        return f"too long ({words} words)"
    if score >= threshold:
        return f"near duplicate (ROUGE-L {score:.2f} ≥ {threshold:g})"
    return ""


def self_instruct_round(model, tokenizer, pool, n: int, *, threshold: float = 0.7, shots: int = 3, seed: int = 0,
                        min_words: int = 3, max_words: int = 60, max_new_tokens: int = 48) -> list[dict]:
    """One round of Self-Instruct's instruction generation: n prompts with `shots` instructions of the pool each
    (drawn with `seed`), the model's sampled reply (its first line), and the filter of Wang et al. (2022): a new
    instruction is kept only if its ROUGE-L with every instruction already in the pool (those kept earlier in this
    round included) is below `threshold`, and it is neither shorter than min_words nor longer than max_words.
    The kept ones are appended to `pool` (a list, changed in place). Returns one row per candidate."""
    if not isinstance(pool, list):
        raise DataError(f"pool={pool!r} is not allowed: a list of instructions (the new ones are added to it)",
                        field="pool")
    threshold = check_number("threshold", threshold, 0, 1, lo_open=True)
    min_words = check_int("min_words", min_words, 1)
    max_words = check_int("max_words", max_words, min_words)
    replies = sample(model, tokenizer, instruction_prompts(tokenizer, pool, n, shots, seed), max_new_tokens, seed)
    rows = []
    for reply in replies:
        text = next((LIST_MARK.sub("", line).strip().strip('"') for line in reply.splitlines() if line.strip()), "")
        score, closest = nearest(text, pool) if text else (0.0, "")
        why = _why_dropped(text, score, threshold, min_words, max_words)
        if not why:
            pool.append(text)
        rows.append({"candidate": text, "closest in pool": closest, "ROUGE-L": score, "kept": not why,
                     "why dropped": why})
    return rows
