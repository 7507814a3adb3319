"""The datasets ftlab ships and reads: the embedded task sets and texts (fixed splits; scripts/build_data.py
made the files, see ftlab/datasets/LICENSES.md), a user's .jsonl/.json file, or a hub id when online, each
as records by `load_records` (or paragraphs by `load_text`). ftlab.data re-exports every name here."""
from __future__ import annotations

import os
import random
from pathlib import Path

from ftlab.errors import DataError, check_int, check_text
from ftlab.records import SPLITS, SUFFIXES, _user_file_rows, read_jsonl


DATA_DIR = Path(__file__).resolve().parent / "datasets"
# name -> (file, task, field map to source/target). Adding a dataset is one row.
DATASETS = {
    "email_subject": ("email_subject.jsonl", "summarize", {"source": "body", "target": "subject"}),
    "definitions": ("definitions.jsonl", "define", {"source": "word", "target": "definition"}),
    "arithmetic": (None, "arithmetic", {"source": "question", "target": "answer"}),
    "preferences": ("preferences.jsonl", "preference", None),
}
# Hub datasets known to work online, with their source/target columns.
HUB_DATASETS = {
    "knkarthick/dialogsum": ("summarize", {"source": "dialogue", "target": "summary"}),
    "samsum": ("summarize", {"source": "dialogue", "target": "summary"}),
}
REQUIRED = {"email_subject": ("split", "body", "subject"), "definitions": ("split", "word", "pos", "definition"),
            "preferences": ("split", "prompt", "chosen", "rejected")}


def list_datasets() -> list[str]:
    return sorted(DATASETS)


def arithmetic(n: int, seed: int = 0, max_value: int = 999) -> list[dict]:
    """Goat-style arithmetic (Liu & Low, 2023) with the working written out, so the answer is reachable
    one easy step at a time: addition and subtraction by place value, multiplication by distribution."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(10, max_value), rng.randint(10, max_value)
        op = rng.choice("+-*")
        if op == "+":
            unit = 100 if max(a, b) >= 100 else 10  # by hundreds, or by tens when both are under 100 (no "0 + 0")
            ha, hb = a - a % unit, b - b % unit
            steps = f"{a} + {b} = {ha} + {hb} + {a % unit} + {b % unit} = {ha + hb} + {a % unit + b % unit} = {a + b}"
        elif op == "-":
            a, b = max(a, b), min(a, b)
            hb = b - b % 10
            steps = f"{a} - {b} = {a} - {hb} - {b % 10} = {a - hb} - {b % 10} = {a - b}"
        else:
            b = rng.randint(2, 99)
            tb = b - b % 10
            steps = (f"{a} * {b} = {a} * {tb} + {a} * {b % 10} = {a * tb} + {a * (b % 10)} = {a * b}")
        result = a + b if op == "+" else a - b if op == "-" else a * b
        rows.append({"question": f"What is {a} {op} {b}?", "answer": steps, "result": result})
    return rows


def _arithmetic_split(split: str, n: int | None, seed: int, max_value: int = 999) -> list[dict]:
    """One seeded stream of unique questions: 200 for test, 200 for validation, the rest for training,
    so no question is in two splits."""
    want = 400 + (n or 2000)
    pool, seen, k = [], set(), 0
    while len(pool) < want:
        before = len(pool)
        for r in arithmetic(want, seed=seed * 1000 + k, max_value=max_value):
            if r["question"] not in seen and len(pool) < want:
                seen.add(r["question"])
                pool.append(r)
        k += 1
        if len(pool) == before:  # a whole round found nothing new: the operands allow no more questions
            raise DataError(f"max_value={max_value} allows only {len(pool)} different sums, fewer than the "
                            f"{want} the three splits need with n={n} (200 test, 200 validation, then training); "
                            "raise max_value or ask for fewer", field="max_value")
    start = {"test": 0, "validation": 200, "train": 400}[split]
    return pool[start:start + (n or (2000 if split == "train" else 200))]


def arithmetic_records(split: str = "train", n: int | None = None, seed: int = 0, max_value: int = 999) -> list[dict]:
    """load_records("arithmetic", split, n, seed) with operands from 10 to `max_value` (999 there): smaller
    numbers give sums a small model sometimes gets right. The splits share no question, as there."""
    max_value = check_int("max_value", max_value, 10, error=DataError)
    if split not in SPLITS:
        raise DataError(f"split={split!r} is not allowed: one of {list(SPLITS)}", field="split")
    if n is not None:
        n = check_int("n", n, 1, error=DataError)
    seed = check_int("seed", seed, 0, error=DataError)
    _, task, fmap = DATASETS["arithmetic"]
    return [{**r, "source": r[fmap["source"]], "target": r[fmap["target"]], "task": task}
            for r in _arithmetic_split(split, n, seed, max_value)]


def load_records(name: str, split: str = "train", n: int | None = None, seed: int = 0) -> list[dict]:
    """Records of one split as {"source", "target", "task", ...} (or preference records as stored).

    `name`: an embedded dataset, a .jsonl or .json file (str or pathlib.Path, suffix in any case) of
    {"prompt", "completion"} records (`~` expanded; see _user_file_rows for its splits), or a hub id
    (owner/name, online). Raises DataError for an unknown name or split, a malformed file, or an empty result.
    """
    if isinstance(name, os.PathLike):  # a pathlib.Path is a file path: read it as its string
        name = os.fspath(name)
    check_text("dataset", name, error=DataError)
    if split not in SPLITS:
        raise DataError(f"split={split!r} is not allowed: one of {list(SPLITS)}", field="split")
    if n is not None:
        n = check_int("n", n, 1, error=DataError)
    seed = check_int("seed", seed, 0, error=DataError)
    path = Path(name).expanduser()
    if name in DATASETS:
        file, task, fmap = DATASETS[name]
        if file is None:  # generated by code
            rows = _arithmetic_split(split, n, seed)
        else:
            rows = [r for r in read_jsonl(DATA_DIR / file, REQUIRED.get(name, ())) if r["split"] == split]
    elif path.suffix.lower() in SUFFIXES or path.exists():
        if path.is_dir() or path.suffix.lower() not in SUFFIXES:
            raise DataError(f"dataset={name!r} is a local {'folder' if path.is_dir() else 'file'}: give a .jsonl "
                            "file (one JSON object a line) or a .json file (a list of objects) of "
                            "{\"prompt\": ..., \"completion\": ...} records", field="dataset")
        if not path.exists():
            raise DataError(f"dataset={name!r}: no such file ({path})", field="dataset")
        task, fmap = "custom", {"source": "prompt", "target": "completion"}
        rows = _user_file_rows(path, split, seed)
    elif name in HUB_DATASETS or ("/" in name and not name.startswith((".", "/", "~"))):
        task, fmap = HUB_DATASETS.get(name, ("custom", {"source": "prompt", "target": "completion"}))
        rows = _hub_rows(name, split)
        missing = [c for c in fmap.values() if rows and c not in rows[0]]
        if missing:  # columns are never assumed: say what the data set has
            raise DataError(f"dataset={name!r} has no column {missing}; its columns are {sorted(rows[0])}. "
                            "Map them to prompt/completion records yourself (datasets.load_dataset, then "
                            "ftlab.train.finetune(cfg, records))", field="dataset")
    else:
        raise DataError(f"dataset={name!r} is unknown: one of {list_datasets()}, a hub id "
                        "(owner/name, online), or a .jsonl / .json file of prompt/completion records", field="dataset")
    if fmap is not None:
        rows = [{**r, "source": r[fmap["source"]], "target": r[fmap["target"]], "task": task} for r in rows]
    if n is not None:
        if 0 < len(rows) < n:  # said, not hidden: a run asking for more repeats these (more epochs)
            print(f"ftlab: dataset={name!r} split={split!r} has {len(rows)} records, fewer than the {n} asked for: "
                  "using all of them")
        rows = rows[:n]
    if not rows:
        raise DataError(f"dataset={name!r} split={split!r} has no records", field="dataset")
    return rows


TEXTS = {"moby_dick": "moby_dick.jsonl"}  # plain prose for language-model metrics (perplexity), not tasks


def load_text(name: str = "moby_dick", split: str = "test", n: int | None = None) -> list[str]:
    """Paragraphs of general text, e.g. to measure forgetting as perplexity on text no run trains on: the first
    `n` of the split (None: all of them)."""
    if not isinstance(name, str) or name not in TEXTS:
        near = [t for t in TEXTS if isinstance(name, str) and t == name.strip().lower()]
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise DataError(f"name={name!r} is not allowed: no text={name!r} is embedded; one of {sorted(TEXTS)}{hint}",
                        field="name")
    if split not in SPLITS:
        raise DataError(f"split={split!r} is unknown: one of {list(SPLITS)}", field="split")
    if n is not None:  # n=-1 would drop the last paragraph, n=0 give nothing to score
        n = check_int("n", n, 1)
    rows = [r["text"] for r in read_jsonl(DATA_DIR / TEXTS[name], required=("split", "text")) if r["split"] == split]
    return rows[:n] if n is not None else rows


def _hub_rows(name: str, split: str) -> list[dict]:
    # lazy: datasets takes seconds to import; only a hub dataset needs it, not the embedded sets or a user's file
    import datasets
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # offline: ConnectionError / FileNotFoundError, depending on the cache state
        raise DataError(f"dataset={name!r} could not be loaded from the hub ({type(e).__name__}); offline, use one "
                        f"of the embedded datasets {list_datasets()}") from None
    return [dict(r) for r in ds]
