"""Task records as text for the model: FLAN-style instruction templates, TRL's prompt/completion and chat
shapes, prompts for generation (zero- and few-shot), and sources shortened to fit a sequence length.
ftlab.data re-exports every name here."""
from __future__ import annotations

import numbers
import random

from ftlab.errors import DataError, check_bool, check_int
from ftlab.records import check_task_records, check_tokenizer

# FLAN-style: several phrasings per task, so a model learns the task rather than one wording.
TEMPLATES = {
    "summarize": [
        "Write a short subject line for this e-mail.\n\n{source}",
        "{source}\n\nWhat would be a good subject line for the e-mail above?",
        "E-mail:\n{source}\n\nSubject line:",
        "Summarize the following e-mail in a few words, as its subject line.\n\n{source}",
    ],
    "define": [
        "Define the {pos} \"{source}\".",
        "What does the {pos} \"{source}\" mean?",
        "Give a dictionary definition of \"{source}\" ({pos}).",
        "\"{source}\" ({pos}): definition?",
    ],
    "arithmetic": [
        "{source}",
        "Compute step by step: {source}",
        "Solve: {source}",
    ],
}


def _check_template(template, options: int | None = None):
    """"random", or a template index (an int, numpy ints included; True is not 1), below `options` if given."""
    ok = template == "random" if isinstance(template, str) else \
        isinstance(template, numbers.Integral) and not isinstance(template, bool) and int(template) >= 0 and \
        (options is None or int(template) < options)
    if not ok:
        below = f"an index from 0 to {options - 1}" if options is not None else "an index ≥ 0"
        raise DataError(f"template={template!r} is not allowed: 'random' or {below} (an integer, not a bool)",
                        field="template")
    return template if isinstance(template, str) else int(template)


def format_prompt(record: dict, template: int | str = 0, rng: random.Random | None = None) -> str:
    """The instruction text for a record. template: an index, or "random" (one per record, FLAN-style)."""
    if not isinstance(record, dict) or not isinstance(record.get("source"), str):
        got = repr(record) if len(repr(record)) <= 80 else repr(record)[:77] + "..."
        raise DataError(f"record={got} is not allowed: a task record, a dict with a string 'source' (as "
                        "load_records returns it)", field="record")
    task = record.get("task", "custom")
    options = TEMPLATES.get(task, ["{source}"])
    template = _check_template(template, len(options))
    text = (rng or random).choice(options) if template == "random" else options[template]
    return text.format(source=record["source"], pos=record.get("pos", ""))


def to_prompt_completion(records: list[dict], template: int | str = 0, chat: bool = True, seed: int = 0) -> list[dict]:
    """TRL's prompt/completion shape. chat=True: conversational ({"role", "content"} lists), so the trainer
    applies the model's chat template and the loss is on the completion only."""
    check_task_records(records)
    template = _check_template(template)
    chat = check_bool("chat", chat)  # "no" is truthy
    seed = check_int("seed", seed, 0)
    rng = random.Random(seed)
    out = []
    for r in records:
        prompt = format_prompt(r, template, rng)
        if chat:
            out.append({"prompt": [{"role": "user", "content": prompt}],
                        "completion": [{"role": "assistant", "content": r["target"]}]})
        else:  # plain text: a fixed separator tells the model where the answer starts
            out.append({"prompt": prompt + "\n### Answer:\n", "completion": r["target"]})
    return out


def to_messages(records: list[dict], template: int | str = 0, seed: int = 0) -> list[dict]:
    """A chat-formatted record per example: {"messages": [user, assistant]}."""
    return [{"messages": p["prompt"] + p["completion"]} for p in to_prompt_completion(records, template, True, seed)]


def chat_prompts(tokenizer, records: list[dict], template: int | str = 0) -> list[str]:
    """Prompts for generation: the chat template with the assistant turn opened. records: task records
    ({"source", "target", ...}, as load_records returns them)."""
    check_tokenizer(tokenizer)
    check_task_records(records)
    _check_template(template)
    return [tokenizer.apply_chat_template([{"role": "user", "content": format_prompt(r, template)}],
                                          tokenize=False, add_generation_prompt=True) for r in records]


def few_shot_prompts(tokenizer, records: list[dict], demonstrations: list[dict], template: int | str = 0) -> list[str]:
    """In-context baselines: each prompt preceded by the demonstrations as earlier chat turns (a user question
    and the assistant's reference answer each), then the question with the assistant turn opened.
    demonstrations=[] gives the zero-shot prompt. Both lists hold task records (as load_records returns them)."""
    check_tokenizer(tokenizer)
    check_task_records(records)
    if not (isinstance(demonstrations, (list, tuple)) and not demonstrations):  # [] is the zero-shot prompt
        check_task_records(demonstrations, "demonstrations")
    _check_template(template)
    turns = []
    for d in demonstrations:
        turns += [{"role": "user", "content": format_prompt(d, template)},
                  {"role": "assistant", "content": d["target"]}]
    return [tokenizer.apply_chat_template(turns + [{"role": "user", "content": format_prompt(r, template)}],
                                          tokenize=False, add_generation_prompt=True) for r in records]


def fit_to_length(records: list[dict], tokenizer, seq_len: int, reserve: int = 64) -> list[dict]:
    """Shorten each record's source so prompt + completion fit in seq_len tokens.

    The trainer cuts sequences from the right, which would cut away the completion (the part the
    loss is on); cutting the source instead keeps every example usable. `reserve` covers the chat
    template, the instruction wording and the target (~20 + 20 + 20 tokens here).
    """
    if not (isinstance(records, list) and not records):  # [] stays [] (a zero-shot lab's demonstrations)
        check_task_records(records)
    check_tokenizer(tokenizer)
    seq_len = check_int("seq_len", seq_len, 8)
    # reserve < 0 would let sources grow past seq_len; reserve ≥ seq_len leaves no room (refused just below)
    reserve = check_int("reserve", reserve, 0)
    target = max((len(tokenizer(r["target"])["input_ids"]) for r in records), default=0)
    budget = seq_len - reserve - target
    if budget < 16:
        raise DataError(f"seq_len={seq_len} is too short for this dataset: at least {seq_len - budget + 16} tokens "
                        f"are needed (reserve={reserve} for the template and instruction, {target} for the longest "
                        "target, 16 for the source)", field="seq_len")
    out, cut = [], 0
    for r in records:
        ids = tokenizer(r["source"], add_special_tokens=False)["input_ids"]
        cut += len(ids) > budget
        out.append({**r, "source": tokenizer.decode(ids[:budget]).strip()} if len(ids) > budget else r)
    if cut:
        print(f"ftlab: {cut} of {len(records)} sources shortened to {budget} tokens to fit seq_len={seq_len} "
              "(their completions kept whole)")
    return out
