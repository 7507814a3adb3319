"""A user's own table of examples made into what ftlab.train.finetune takes: the file read (JSON lines and JSON
through ftlab.records, strictly with the line; CSV and Parquet through `datasets`), its columns mapped to
prompt/completion, a chat (messages) column or plain text, each example's tokens as TRL's SFTTrainer makes
them (which of them carry the loss), what seq_len would cut or drop, and a seeded validation split.
Every mistake is a DataError naming the column and the row (row 1 is the first example)."""
from __future__ import annotations

import csv
import random
import tempfile

from ftlab.errors import ConfigError, DataError, check_int, check_number
from ftlab.errors import short as _short
from ftlab.records import check_tokenizer, file_path, read_json, read_jsonl

TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
MODES = ("pair", "messages", "text")  # prompt + completion columns, a chat column, a plain-text column
PAIRS = (("prompt", "completion"), ("instruction", "output"), ("question", "answer"), ("instruction", "response"),
         ("input", "output"), ("question", "response"))
CHATS = ("messages", "conversations", "conversation", "chat")
TEXTS = ("text", "content", "document")
ROLES = ("system", "user", "assistant")


def read_table(path) -> tuple[list[dict], list[str]]:
    """(rows, columns) of a .jsonl/.json/.csv/.parquet file (`~` expanded); columns in order of first appearance.
    CSV cells are read as text (a number stays "42", an empty cell is ""), as a user typed them."""
    path = file_path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(f"{path.name}: the suffix {suffix or '(none)'!r} is not one ftlab reads: "
                        f"{', '.join(TABLE_SUFFIXES)}", field="path")
    if not path.is_file():
        raise DataError(f"{str(path)!r} is not a file", field="path")
    if suffix == ".jsonl":
        rows = read_jsonl(path)
    elif suffix == ".json":
        rows = read_json(path)
    elif suffix == ".csv":
        rows = _read_csv(path)
    else:
        rows = _read_with_datasets(path, suffix)
    if not rows:
        raise DataError(f"{path.name} has no rows: at least one example is needed", field="path")
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return rows, columns


def _read_csv(path) -> list[dict]:
    """CSV through Python's csv module, strictly: pandas (under datasets) takes a row with one cell too many as an
    index and shifts the columns, and keeps one of two equal column names, both in silence."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            table = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path.name} cannot be read as CSV: {e}", field="path") from None
    if not table:
        raise DataError(f"{path.name} is empty: a header row and at least one example are needed", field="path")
    header = table[0]
    blank = [i + 1 for i, n in enumerate(header) if not n.strip()]
    twice = sorted({n for n in header if header.count(n) > 1})
    if blank or twice:
        raise DataError(f"{path.name}: the header {header} has " + (f"an empty name at column {blank[0]}" if blank
                        else f"the name {twice[0]!r} twice") + ": every column needs its own name", field="path")
    rows = []
    for i, cells in enumerate(table[1:]):
        if not cells:
            continue  # a blank line
        if len(cells) != len(header):
            raise DataError(f"{path.name}, row {i + 1}: {len(cells)} cells, the header has {len(header)} "
                            f"({', '.join(header)}): a comma inside a value needs quotes", field="path")
        rows.append(dict(zip(header, cells)))
    return rows


def _read_with_datasets(path, suffix: str) -> list[dict]:
    # lazy: datasets (with pyarrow) takes ~1 s to import; JSON-lines files are read without it
    from datasets import Dataset
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars  # lazy, too
    quiet = are_progress_bars_disabled()
    disable_progress_bars()  # a small file's "Generating train split" bar says nothing
    try:
        with tempfile.TemporaryDirectory(prefix="ftlab-table-") as cache:
            ds = Dataset.from_parquet(str(path), cache_dir=cache, keep_in_memory=True)
            return ds.to_list()
    except Exception as e:  # pandas' or pyarrow's parser: named with the file, never a traceback
        raise DataError(f"{path.name} cannot be read as {suffix[1:].upper()}: {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}", field="path") from None
    finally:
        if not quiet:
            enable_progress_bars()


def guess_columns(columns: list[str]) -> dict:
    """The obvious mapping for these column names: {"mode", "prompt", "completion", "messages", "text"} (a
    column or None). Prompt/completion pairs first, then a chat column, then a text column."""
    lower = {c.lower(): c for c in reversed(columns)}
    guess = dict.fromkeys(("prompt", "completion", "messages", "text"))
    guess["mode"] = "pair"
    chat = next((lower[n] for n in CHATS if n in lower), None)
    text = next((lower[n] for n in TEXTS if n in lower), None)
    pair = next(((lower[p], lower[c]) for p, c in PAIRS if p in lower and c in lower), None)
    guess.update(messages=chat, text=text)
    if pair:
        guess.update(prompt=pair[0], completion=pair[1])
    elif chat:
        guess["mode"] = "messages"
    elif text:
        guess["mode"] = "text"
    return guess


def to_records(rows: list[dict], mapping: dict, system_prompt: str = "") -> list[dict]:
    """The rows as finetune's records: {"prompt": [system?, user], "completion": [assistant]} (mode "pair"),
    the chat split before its last (assistant) turn, which is the completion (mode "messages"), or {"text"}.
    A system prompt is put first in each chat that has none of its own."""
    mode = mapping.get("mode")
    if mode not in MODES:
        raise ConfigError("mode", mode, f"one of {list(MODES)}")
    needed = {"pair": ("prompt", "completion"), "messages": ("messages",), "text": ("text",)}[mode]
    for role in needed:
        if not mapping.get(role):
            raise DataError(f"choose the {role} column", field=role)
    system = [{"role": "system", "content": system_prompt}] if system_prompt.strip() else []
    out = []
    for i, row in enumerate(rows):
        values = {role: _cell(row, mapping[role], i, messages=role == "messages") for role in needed}
        if mode == "pair":
            out.append({"prompt": system + [{"role": "user", "content": values["prompt"]}],
                        "completion": [{"role": "assistant", "content": values["completion"]}]})
        elif mode == "messages":
            chat = values["messages"]
            if chat[-1]["role"] != "assistant" or len(chat) < 2:
                raise DataError(f"column {mapping['messages']!r} at row {i + 1}: the chat ends with a "
                                f"{chat[-1]['role']!r} turn after {len(chat) - 1} others: it needs a turn before the "
                                "last and to end with the assistant's (the completion the loss is on)",
                                field="messages")
            prompt = chat[:-1] if chat[0]["role"] == "system" else system + chat[:-1]
            out.append({"prompt": prompt, "completion": chat[-1:]})
        else:
            out.append({"text": values["text"]})
    return out


def _cell(row: dict, column: str, i: int, messages: bool):
    """One value: a non-empty string, or (messages) a non-empty list of {"role": str, "content": str}."""
    where = f"column {column!r} at row {i + 1}"
    if column not in row:
        raise DataError(f"{where} is missing (this row has {sorted(row)})", field="columns")
    value = row[column]
    if messages:
        if not isinstance(value, list) or not value:
            raise DataError(f"{where} is {type(value).__name__} {_short(value)}: a non-empty list of "
                            "{'role': ..., 'content': ...} messages is needed", field="columns")
        for j, m in enumerate(value):
            if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
                raise DataError(f"{where}, message {j + 1}, is {_short(m)}: a message is {{'role': str, "
                                "'content': str}", field="columns")
            if m["role"] not in ROLES or not m["content"].strip():
                raise DataError(f"{where}, message {j + 1}: role {m['role']!r} with content {_short(m['content'])}: "
                                f"the role is one of {list(ROLES)} and the content is not empty", field="columns")
        talk = [m["role"] for m in value if m["role"] != "system"]
        if any(m["role"] == "system" for m in value[1:]) or not talk or talk[0] != "user":
            raise DataError(f"{where}: the roles are {[m['role'] for m in value]}: a chat is an optional system "
                            "message first, then the user's turn, then the assistant's (and so on)", field="columns")
        return [{"role": m["role"], "content": m["content"]} for m in value]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where} is empty", field="columns")
    if not isinstance(value, str):
        raise DataError(f"{where} is {type(value).__name__} {_short(value)}: text (a string) is needed",
                        field="columns")
    return value


def tokenized(tokenizer, record: dict) -> tuple[list[int], int]:
    """(token ids, how many lead tokens carry no loss) as TRL's SFTTrainer tokenises the record: the chat
    template over prompt + completion, the loss from where it parts from the prompt with the assistant turn
    opened (completion-only loss); a text record is all loss, with the end-of-text token TRL appends."""
    if "text" in record:
        eos = tokenizer.eos_token or ""
        text = record["text"] if record["text"].endswith(eos) else record["text"] + eos
        return list(tokenizer(text)["input_ids"]), 0
    prompt = tokenizer.apply_chat_template(record["prompt"], tokenize=True, return_dict=True,
                                           add_generation_prompt=True)["input_ids"]
    ids = list(tokenizer.apply_chat_template(record["prompt"] + record["completion"], tokenize=True,
                                             return_dict=True)["input_ids"])
    same = 0
    while same < min(len(prompt), len(ids)) and prompt[same] == ids[same]:
        same += 1
    return ids, same


def length_report(lengths: list[tuple[int, int]], seq_len: int) -> dict:
    """Of (length, prompt length) pairs: how many are longer than seq_len ("longer"), of them how many TRL
    would cut at seq_len keeping some completion ("cut"), and how many it drops, the prompt alone filling
    seq_len so no loss token is left ("dropped")."""
    seq_len = check_int("seq_len", seq_len, 1)
    longer = [(n, p) for n, p in lengths if n > seq_len]
    dropped = sum(p >= seq_len for _, p in longer)
    return {"examples": len(lengths), "longer": len(longer), "cut": len(longer) - dropped, "dropped": dropped}


def split_records(records: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, validation): a seeded shuffle holds out round(fraction × n) examples (at least one); both keep
    the file's order. At least 1 validation and 2 training examples are needed."""
    fraction = check_number("validation_fraction", fraction, 0, 0.5, lo_open=True, hi_open=True)
    seed = check_int("seed", seed, 0)
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    held = max(1, round(len(records) * fraction))
    if len(records) - held < 2:
        raise DataError(f"{len(records)} examples with validation_fraction={fraction:g}: {held} validation and "
                        f"{len(records) - held} training; at least 1 validation and 2 training examples are needed",
                        field="validation_fraction")
    val = set(order[:held])
    return ([r for i, r in enumerate(records) if i not in val], [r for i, r in enumerate(records) if i in val])


def held_out_pairs(tokenizer, records: list[dict], n: int) -> tuple[list[str], list[str], list[str]]:
    """(prompts for generation, reference answers, the user turns) of the first `n` prompt/completion records (what
    DataPanel.records() gives): each prompt is the chat template over the record's turns with the assistant's
    opened, as the trained model is asked. Plain-text records have no answer to score: DataError."""
    check_tokenizer(tokenizer)
    n = check_int("n", n, 1)
    if not isinstance(records, list) or not records:
        raise DataError(f"records: a non-empty list of prompt/completion records is needed, not {_short(records)}",
                        field="records")
    if any(not isinstance(r, dict) or "prompt" not in r or "completion" not in r for r in records):
        raise DataError("the examples are plain text (language modelling): there is no prompt to answer, so no "
                        "answer to score; map a prompt and a completion column to score answers", field="mode")
    chosen = records[:n]
    prompts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in chosen]
    return prompts, [r["completion"][-1]["content"] for r in chosen], [r["prompt"][-1]["content"] for r in chosen]
