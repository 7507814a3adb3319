"""Records as ftlab reads and checks them: a user's JSON-lines or JSON file (strictly, naming the file and line
of a mistake, with a seeded held-out split when it has no "split" field), and the shapes the trainers take
(task records, prompt/completion or chat records, conversational records as loss_batches and the trainers
read them), each refused with its index and what it holds; and the tokenizer that turns them into tokens.
Both ftlab.data and ftlab.evaluation check their inputs with these, so neither needs the other to do it.
"""
from __future__ import annotations

import codecs
import json
import os
import random
from pathlib import Path

from ftlab.errors import ConfigError, DataError, check_strings
from ftlab.errors import short as _short


SPLITS = ("train", "validation", "test")
SUFFIXES = (".jsonl", ".json")  # a user's file of records; compared case-insensitively (DATA.JSONL is one too)


def file_path(path, field: str = "path") -> Path:
    """A file path as str or os.PathLike (pathlib.Path), `~` expanded; anything else is a ConfigError naming
    `field` (Path(None) would be a TypeError, a bytes path a string of its repr)."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(field, path, "a file path: a non-empty str or a pathlib.Path")
    return Path(path).expanduser()


def _required(required) -> tuple:
    """The `required` field names: a tuple or list of strings (a bare string would be read as its letters)."""
    return tuple(check_strings("required", required, allow_empty_list=True))


def read_jsonl(path, required: tuple = ()) -> list[dict]:
    """Read a JSON-lines file strictly: a bad line raises DataError naming the file and line number. Each
    `required` field (a tuple or list of names) must be present and a non-empty string ("split" may be empty).
    `path` is a str or pathlib.Path; UTF-8 with or without a byte-order mark, and Windows (CRLF) line ends."""
    path = file_path(path)
    required = _required(required)
    rows = []
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"dataset file {str(path)!r} cannot be read: {e.strerror}", field="dataset") from None
    if raw.startswith(codecs.BOM_UTF8):  # Windows editors write one; it is not part of the first record
        raw = raw[len(codecs.BOM_UTF8):]
    for no, line in enumerate(raw.split(b"\n"), start=1):  # a CRLF line keeps its \r: JSON whitespace
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}:{no}: not UTF-8 (byte {line[e.start]:#04x} at column {e.start + 1}); "
                            "save the file as UTF-8", field="dataset") from None
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{no}: malformed JSON ({e.msg} at column {e.colno}); "
                            "each line must be one JSON object", field="dataset") from None
        _check_row(row, required, f"{path}:{no}")
        rows.append(row)
    if not rows:
        raise DataError(f"dataset file {str(path)!r} is empty: at least one record is required", field="dataset")
    return rows


def _check_row(row, required: tuple, where: str) -> None:
    """One stored record: a JSON object whose required fields are present, strings, and (but "split") not empty."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: a JSON object is required, got {type(row).__name__} {_short(row)}", field="dataset")
    for key in required:
        if key not in row:
            raise DataError(f"{where}: missing field {key!r}; required fields: {list(required)} "
                            f"(this record has {sorted(row)})", field="dataset")
        value = row[key]
        if not isinstance(value, str):
            raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__} {_short(value)}",
                            field="dataset")
        if not value.strip() and key != "split":
            raise DataError(f"{where}: field {key!r} is empty", field="dataset")


def read_json(path, required: tuple = ()) -> list[dict]:
    """A .json file holding a list of records (a JSON array of objects), checked as read_jsonl checks lines
    (`path` a str or pathlib.Path; a UTF-8 byte-order mark is skipped)."""
    path = file_path(path)
    required = _required(required)
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except OSError as e:
        raise DataError(f"dataset file {str(path)!r} cannot be read: {e.strerror}", field="dataset") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8; save the file as UTF-8", field="dataset") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON ({e.msg} at line {e.lineno}, column {e.colno})",
                        field="dataset") from None
    if isinstance(data, dict):
        raise DataError(f"{path}: a JSON array of records is required, got an object with keys {sorted(data)[:5]} "
                        "(a list of {\"prompt\": ..., \"completion\": ...} objects; or one object a line as .jsonl)",
                        field="dataset")
    if not isinstance(data, list):
        raise DataError(f"{path}: a JSON array of records is required, got {type(data).__name__}", field="dataset")
    for i, row in enumerate(data):
        _check_row(row, required, f"{path} record {i}")
    if not data:
        raise DataError(f"dataset file {str(path)!r} is empty: at least one record is required", field="dataset")
    return data


USER_FILE_FIELDS = ("prompt", "completion")
USER_VALIDATION_SHARE = 0.1  # a user's file without a "split" field: this share (≥ 1 record) is held out


def _user_file_rows(path: Path, split: str, seed: int) -> list[dict]:
    """A user's .jsonl/.json file of prompt/completion records. With a "split" field in every record, its
    values choose the rows; without one, a seeded shuffle holds out 10 % (at least one record) as the
    validation split, which also serves as test, and says so: validation never repeats training data."""
    read = read_json if path.suffix.lower() == ".json" else read_jsonl
    rows = read(path, USER_FILE_FIELDS)
    if all("split" in r for r in rows):
        values = sorted({str(r["split"]) for r in rows})
        unknown = [v for v in values if v not in SPLITS]
        if unknown:
            raise DataError(f"{path}: split values {unknown} are not allowed: one of {list(SPLITS)}", field="dataset")
        return [r for r in rows if r["split"] == split]
    if any("split" in r for r in rows):
        raise DataError(f"{path}: some records have a 'split' field and some do not: give it to all or none",
                        field="dataset")
    if len(rows) < 2:
        raise DataError(f"{path}: {len(rows)} record: at least 2 are needed, one to train on and one held out "
                        "(or give each record a 'split' field)", field="dataset")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = max(1, round(len(rows) * USER_VALIDATION_SHARE))
    picked = order[:held] if split in ("validation", "test") else order[held:]
    if split == "train":
        print(f"ftlab: {path.name} has no 'split' field: {len(rows) - held} records train, {held} are held out "
              f"(seed={seed}) as the validation and test split")
    return [rows[i] for i in sorted(picked)]


def check_task_records(records, field: str = "records") -> list[dict]:
    """Task records as load_records returns them: a list of dicts with string "source" and "target"."""
    _check_list(records, field)
    for i, r in enumerate(records):
        where = f"{field}[{i}]"
        if not isinstance(r, dict):
            raise DataError(f"{where} is {type(r).__name__} {_short(r)}: a dict with 'source' and 'target' is needed "
                            "(as ftlab.data.load_records returns)", field=field)
        if "chosen" in r and "rejected" in r:
            raise DataError(f"{where} is a preference pair (prompt, chosen, rejected): train on pairs with "
                            "ftlab.align.train_dpo or train_reward_model", field=field)
        for key in ("source", "target"):
            if not isinstance(r.get(key), str) or not r[key].strip():
                got = "missing" if key not in r else f"{type(r[key]).__name__} {_short(r[key])}"
                raise DataError(f"{where}[{key!r}] is {got}: a non-empty string is needed (this record has keys "
                                f"{sorted(r)}; records from a file of prompt/completion pairs come from "
                                "load_records(path))", field=field)
    return records


def check_sft_records(records, field: str = "train_records") -> list[dict]:
    """Records for TRL's SFTTrainer: prompt/completion (strings, or {"role", "content"} message lists),
    {"messages": [...]}, or {"text": ...}. Refused with the record's number and what it holds, before training."""
    _check_list(records, field)
    for i, r in enumerate(records):
        where = f"{field}[{i}]"
        if not isinstance(r, dict):
            raise DataError(f"{where} is {type(r).__name__} {_short(r)}: a dict is needed, e.g. "
                            "{'prompt': ..., 'completion': ...} (ftlab.data.to_prompt_completion makes them)",
                            field=field)
        if "chosen" in r or "rejected" in r:
            raise DataError(f"{where} is a preference pair ({sorted(r)}): supervised fine-tuning needs prompt/"
                            "completion records; train on pairs with ftlab.align.train_dpo or train_reward_model",
                            field=field)
        keys = ("prompt", "completion") if "prompt" in r or "completion" in r else \
            ("messages",) if "messages" in r else ("text",) if "text" in r else None
        if keys is None:
            raise DataError(f"{where} has keys {sorted(r)}: needed are 'prompt' and 'completion' (or 'messages', "
                            "or 'text'); task records from load_records go through to_prompt_completion first",
                            field=field)
        kinds = set()
        for key in keys:
            kinds.add(_check_content(r.get(key, _MISSING), f"{where}[{key!r}]", field,
                                     messages=key in ("messages",)))
        if len(kinds) > 1:
            raise DataError(f"{where}: prompt and completion must both be strings or both message lists", field=field)
    return records


_MISSING = object()


def _check_content(value, where: str, field: str, messages: bool = False) -> str:
    """A string (non-empty) or a non-empty list of {"role": str, "content": str} messages; returns which."""
    if value is _MISSING:
        raise DataError(f"{where} is missing", field=field)
    if isinstance(value, str) and not messages:
        if not value.strip():
            raise DataError(f"{where} is empty", field=field)
        return "text"
    if isinstance(value, list) and value:
        for j, m in enumerate(value):
            ok = isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            if not ok:
                raise DataError(f"{where}[{j}] is {_short(m)}: a message is {{'role': str, 'content': str}}",
                                field=field)
        return "messages"
    what = "a non-empty list of messages" if messages else "a non-empty string or a list of messages"
    raise DataError(f"{where} is {type(value).__name__} {_short(value)}: {what} is needed", field=field)


def _check_list(records, field: str) -> None:
    if isinstance(records, dict) or not isinstance(records, (list, tuple)):
        hint = " (one record? put it in a list)" if isinstance(records, dict) else ""
        raise DataError(f"{field} is {type(records).__name__} {_short(records)}: a list of records is needed{hint}",
                        field=field)
    if not records:
        raise DataError(f"{field} is empty: at least one record is needed", field=field)


def check_tokenizer(tokenizer, field: str = "tokenizer"):
    """The model's tokenizer (a transformers tokenizer: callable, with a chat template method)."""
    if tokenizer is None or not callable(tokenizer) or not hasattr(tokenizer, "apply_chat_template"):
        shown = tokenizer if tokenizer is None or isinstance(tokenizer, (str, bytes, int, float)) else \
            type(tokenizer).__name__
        raise ConfigError(field, shown, "the model's tokenizer (load_model returns it)")
    return tokenizer


def check_conversations(field: str, records, keys: tuple = ("prompt", "completion"), text_ok: bool = False,
                        allow_empty: bool = False) -> list[dict]:
    """Records as TRL's trainers and ftlab.data.loss_batches read them: a list of dicts whose `keys` each hold a
    non-empty list of {"role": str, "content": str} messages (text_ok: or each a non-empty string). DataError
    names the record, what it has and what is needed, before a model runs."""
    needed = " and ".join(repr(k) for k in keys)
    if isinstance(records, (str, dict)) or not isinstance(records, (list, tuple)):
        hint = " (one record? put it in a list)" if isinstance(records, dict) else ""
        raise DataError(f"{field}={_short(records)} is not allowed: a list of records with {needed} is needed, "
                        f"not a {type(records).__name__}{hint}", field=field)
    if not records and not allow_empty:
        raise DataError(f"{field}={_short(records)} is not allowed: it is empty; at least one record with {needed} "
                        "is needed", field=field)
    what = "a non-empty string or a non-empty list of messages" if text_ok else \
        "a non-empty list of {'role': str, 'content': str} messages"
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise DataError(f"{field}[{i}] is {type(r).__name__} {_short(r)}: a dict with {needed} is needed",
                            field=field)
        missing = [k for k in keys if k not in r]
        if missing:
            raise DataError(f"{field}[{i}] has keys {sorted(r)}: needed are {needed}{_shape_hint(r, keys)}",
                            field=field)
        kinds = set()
        for k in keys:
            v = r[k]
            if text_ok and isinstance(v, str) and v.strip():
                kinds.add("text")
                continue
            ok = isinstance(v, list) and v and all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                                   and isinstance(m.get("content"), str) for m in v)
            if not ok:
                raise DataError(f"{field}[{i}][{k!r}] is {type(v).__name__} {_short(v)}: {what} is needed",
                                field=field)
            kinds.add("messages")
        if len(kinds) > 1:  # TRL applies the chat template to all of a record or to none of it
            raise DataError(f"{field}[{i}]: {needed} must all be strings or all message lists", field=field)
    return list(records)


def _shape_hint(record: dict, keys: tuple) -> str:
    if "chosen" in record and "chosen" not in keys:
        return " (this is a preference pair: train on pairs with ftlab.align.train_dpo or train_reward_model)"
    if "completion" in record and "chosen" in keys:
        return " (this is a prompt/completion record; ftlab.align.preference_pairs makes preference pairs)"
    if "source" in record:
        return " (task records from load_records go through ftlab.data.to_prompt_completion first)"
    return ""
