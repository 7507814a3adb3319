"""Labelled text for classification: the embedded set (the part of speech of the word a WordNet gloss defines, four
classes), samples of it that every method shares, and the checks a labelled set must pass before training (each
refusal a DataError or ConfigError naming the field, showing the value and saying what is allowed).

A record is {"text": str, "label": str}; a label set is the ordered list of label names, whose positions are the
class ids a classification head predicts.
"""
from __future__ import annotations

import random
from collections import Counter

from ftlab.catalog import load_records
from ftlab.errors import ConfigError, DataError, check_int, short

# name -> (embedded dataset, the field holding the text, the field holding the label, the label set)
LABELLED = {
    "part_of_speech": ("definitions", "definition", "pos", ("noun", "verb", "adjective", "adverb")),
}


def load_labelled(name: str = "part_of_speech", split: str = "train") -> tuple[list[dict], list[str]]:
    """(records, label set) of one split of an embedded labelled set: records as {"text", "label"}."""
    if name not in LABELLED:
        raise DataError(f"dataset={name!r} is not allowed: one of {sorted(LABELLED)}", field="dataset")
    source, text, label, labels = LABELLED[name]
    rows = [{"text": r[text], "label": r[label]} for r in load_records(source, split)]
    return check_labelled(rows, list(labels), split=split), list(labels)


def sample(records: list[dict], n: int, seed: int = 0, balanced: bool = True) -> list[dict]:
    """`n` records drawn with `seed`. balanced: as even over the labels as the data allows (round robin over the
    shuffled classes), so that 32 examples of four classes hold eight of each; else the first n after shuffling
    (the classes in their natural proportions, as a test set should keep them)."""
    n = check_int("n", n, 1)
    rng = random.Random(seed)
    rows = list(records)
    rng.shuffle(rows)
    if not balanced:
        return rows[:n]
    by_label: dict[str, list[dict]] = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r)
    out, queues = [], [list(v) for _, v in sorted(by_label.items())]
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop())
    rng.shuffle(out)
    return out


def check_labelled(records, labels: list[str], split: str = "train", text: str = "text",
                   label: str = "label") -> list[dict]:
    """Records checked against a label set: a non-empty list of dicts, each with a non-empty text and a label from
    `labels`; a training split must hold at least two classes (with one, every method learns a constant)."""
    labels = check_labels(labels)
    if not isinstance(records, (list, tuple)) or not records:
        raise DataError(f"records={short(records)} is not allowed: a non-empty list of {{{text!r}: ..., "
                        f"{label!r}: ...}} dicts ({split} split)", field="records")
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise DataError(f"records[{i}]={short(r)} is not allowed: a dict with {text!r} and {label!r} "
                            f"({split} split)", field="records")
        for key in (text, label):
            if key not in r:
                raise DataError(f"records[{i}] has no {key!r} column: its columns are {sorted(r)}; each record "
                                f"needs {text!r} (the input) and {label!r} (one of {list(labels)})", field=key)
        if not isinstance(r[text], str) or not r[text].strip():
            raise DataError(f"records[{i}][{text!r}]={short(r[text])} is not allowed: a non-empty string "
                            f"({split} split)", field=text)
        if r[label] not in labels:
            raise DataError(f"records[{i}][{label!r}]={short(r[label])} is not allowed: one of {list(labels)} "
                            f"({split} split)", field=label)
    seen = Counter(r[label] for r in records)
    if split == "train" and len(seen) < 2:
        raise DataError(f"label={next(iter(seen))!r} is the only class in the train split ({len(records)} "
                        f"records): a classifier needs at least two of {list(labels)} to learn anything",
                        field="label")
    return [{text: r[text], label: r[label]} for r in records]


def check_labels(labels) -> list[str]:
    """A label set: a list of at least two distinct, non-empty names (a class id is a name's position)."""
    if (not isinstance(labels, (list, tuple)) or len(labels) < 2 or len(set(labels)) != len(labels)
            or not all(isinstance(x, str) and x.strip() for x in labels)):
        raise ConfigError("labels", labels, "a list of at least two distinct, non-empty label names")
    return list(labels)


def check_num_labels(num_labels, labels: list[str]) -> int:
    """A head's number of outputs must equal the label set's size (each output is one class's score)."""
    n = check_int("num_labels", num_labels, 2) if num_labels is not None else len(labels)
    if n != len(labels):
        raise ConfigError("num_labels", num_labels, f"{len(labels)}, the number of labels in the data "
                          f"({list(labels)}): a head has one output per class")
    return n


def majority(train: list[dict], test: list[dict]) -> tuple[str, float]:
    """The training split's most frequent label, and the accuracy of always answering it on `test`."""
    top = Counter(r["label"] for r in train).most_common(1)[0][0]
    return top, sum(r["label"] == top for r in test) / len(test)
