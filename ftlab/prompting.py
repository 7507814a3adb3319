"""Prompting strategies for sums (the Goat-style arithmetic records of ftlab.catalog), as chat prompts:

    direct            the question and "Answer with the number only."
    zero-shot CoT     the question, and the answer opened with "Let's think step by step." (Kojima et al., 2022)
    few-shot CoT      worked demonstrations first: each a question and its worked answer (Wei et al., 2022)
    few-shot answers  the same demonstrations with the bare result as each answer (Wei et al.'s standard prompting)

Every prompt goes through the tokenizer's chat template, with the assistant turn opened, ready for
ftlab.evaluation.generate; ftlab.analysis.task_score reads the result of each answer.
"""
from __future__ import annotations

import math
import numbers
import re

from ftlab.errors import ConfigError, DataError, check_int, check_strings, short
from ftlab.records import check_task_records, check_tokenizer

DIRECT_INSTRUCTION = "Answer with the number only."
COT_TRIGGER = "Let's think step by step."  # Kojima et al. (2022): the answer starts with it
STRATEGIES = ("direct", "zero-shot CoT", "few-shot CoT", "few-shot answers")
FEW_SHOT = ("few-shot CoT", "few-shot answers")
SETTINGS = STRATEGIES + ("fine-tuned",)  # what describe_strategies compares: the four prompts and a tuned model
_SUM = re.compile(r"(\d+)\s*([-+*/x×])\s*(\d+)")


def check_sums(records, field: str = "records") -> list[dict]:
    """Task records of sums: each with a string 'source' (the question), 'target' (the worked answer) and an
    integer 'result', as load_records("arithmetic", ...) returns them."""
    records = check_task_records(records, field)
    for i, r in enumerate(records):
        res = r.get("result")
        if not isinstance(res, numbers.Integral) or isinstance(res, bool):
            raise DataError(f"{field}[{i}]={short(r)} is not allowed: a sum's record with an integer 'result' "
                            "(load_records('arithmetic', ...) gives them)", field=field)
    return records


def operation(record: dict) -> str:
    """The operator of a sum's question ("What is 12 * 34?" -> "*"), or "" when it shows none."""
    m = _SUM.search(record.get("source", "")) if isinstance(record, dict) else None
    return m.group(2) if m else ""


def pick_demonstrations(records, k: int) -> list[dict]:
    """k demonstrations from `records` (training sums), taking the operations in turn (+, -, *, then again), so
    each kind of working is shown once before any is shown twice."""
    records = check_sums(records)
    k = check_int("k", k, 1, len(records), error=DataError)
    queues: dict[str, list] = {}
    for r in records:
        queues.setdefault(operation(r), []).append(r)
    out = []
    while len(out) < k:
        for q in queues.values():
            if q and len(out) < k:
                out.append(q.pop(0))
    return out


def strategy_messages(record: dict, strategy: str, demonstrations=()) -> tuple[list[dict], str]:
    """The chat turns of one question under a strategy, and the text that opens the assistant's answer
    ("" except for zero-shot CoT, whose trigger starts the answer as in Kojima et al.)."""
    strategy = _check_strategy(strategy)
    turns = []
    for d in demonstrations:
        answer = d["target"] if strategy == "few-shot CoT" else str(d["result"])
        turns += [{"role": "user", "content": d["source"]}, {"role": "assistant", "content": answer}]
    question = record["source"] + (" " + DIRECT_INSTRUCTION if strategy == "direct" else "")
    return turns + [{"role": "user", "content": question}], COT_TRIGGER if strategy == "zero-shot CoT" else ""


def strategy_prompts(tokenizer, records, strategy: str, demonstrations=None) -> list[str]:
    """One prompt a held-out sum under `strategy` (one of STRATEGIES), through the chat template with the
    assistant turn opened. The few-shot strategies need `demonstrations` (training sums, none of them a
    held-out question); the zero-shot ones take none."""
    check_tokenizer(tokenizer)
    records = check_sums(records)
    strategy = _check_strategy(strategy)
    demos = [] if demonstrations is None else demonstrations
    if strategy in FEW_SHOT:
        if isinstance(demos, (list, tuple)) and not demos:
            raise DataError(f"demonstrations={short(demonstrations)} is not allowed for strategy={strategy!r}: "
                            "a list of training sums (pick_demonstrations gives them)", field="demonstrations")
        demos = check_sums(demos, "demonstrations")
        asked = {r["source"] for r in records}
        leaked = [i for i, d in enumerate(demos) if d["source"] in asked]
        if leaked:
            raise DataError(f"demonstrations[{leaked[0]}] ({demos[leaked[0]]['source']!r}) is not allowed: it is one "
                            "of the held-out questions, so its answer would be in the prompt; take demonstrations "
                            "from the training split", field="demonstrations")
    elif demos:
        raise DataError(f"demonstrations={short(demonstrations)} is not allowed for strategy={strategy!r}: a "
                        f"zero-shot strategy shows none (give None or [], or use one of {list(FEW_SHOT)})",
                        field="demonstrations")
    out = []
    for r in records:
        turns, opening = strategy_messages(r, strategy, demos)
        out.append(tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True) + opening)
    return out


def token_lengths(tokenizer, texts) -> list[int]:
    """Tokens in each text as the model reads it (no special tokens added: a templated prompt has its own)."""
    check_tokenizer(tokenizer)
    texts = check_strings("texts", texts, error=DataError)
    return [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]


def _check_strategy(strategy) -> str:
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ConfigError("strategy", strategy, f"one of {list(STRATEGIES)}")
    return strategy


def mcnemar_p(only_first: int, only_second: int) -> float:
    """Exact two-sided McNemar test for two settings scored on the same questions: the chance of a split of the
    discordant questions (right under one setting only) at least this uneven if neither setting were better."""
    b = check_int("only_first", only_first, 0)
    c = check_int("only_second", only_second, 0)
    n = b + c
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def _versus(rows: dict, a: str, b: str) -> tuple[int, int, int, int, float]:
    """(right under a, right under b, right under a only, right under b only) and the McNemar p of a against b."""
    ra, rb = rows[a]["correct"], rows[b]["correct"]
    only_a = sum(x and not y for x, y in zip(ra, rb))
    only_b = sum(y and not x for x, y in zip(ra, rb))
    return sum(ra), sum(rb), only_a, only_b, mcnemar_p(only_a, only_b)


def _compare(rows: dict, a: str, b: str, what_a: str, what_b: str) -> str:
    right_a, right_b, only_a, only_b, p = _versus(rows, a, b)
    n = len(rows[a]["correct"])
    if right_a == right_b:
        head = f"{what_a} ({a}) got as many right as {what_b} ({b}): {right_a} of {n}"
    else:
        head = (f"{what_a} ({a}) got {right_a} of {n} right, {'more' if right_a > right_b else 'fewer'} than "
                f"{what_b} ({b}, {right_b})")
    if not only_a and not only_b:
        return head + ", on exactly the same questions."
    verdict = "a difference unlikely by chance" if p < 0.05 else "too few to tell the two apart"
    return (head + f"; {only_a} right only under {a}, {only_b} only under {b} (exact McNemar p = {p:.2f}: "
            f"{verdict}).")


def describe_strategies(rows, parameters: int) -> list[str]:
    """What a comparison of the SETTINGS shows, worded by its numbers. rows: one dict a setting with "setting"
    (each of SETTINGS once), "correct" (a bool a held-out question, the same questions in the same order for
    every setting), "prompt tokens" and "answer tokens" (means). parameters: the base model's size."""
    rows = _check_rows(rows)
    parameters = check_int("parameters", parameters, 1)
    n = len(rows["direct"]["correct"])
    right = {s: sum(r["correct"]) for s, r in rows.items()}
    best = [s for s in SETTINGS if right[s] == max(right.values())]
    out = [f"None of the settings got any of the {n} sums right." if not max(right.values()) else
           f"Most sums right: {' and '.join(best)}, {right[best[0]]} of {n}."]
    out.append(_compare(rows, "zero-shot CoT", "direct", "Asking for the working", "asking for the number only"))
    out.append(_compare(rows, "few-shot CoT", "few-shot answers", "Demonstrations that show the working",
                        "the same demonstrations with the results only"))
    prompted = max(STRATEGIES, key=lambda s: right[s])
    out.append(_compare(rows, "fine-tuned", prompted, "The fine-tuned model, asked the bare question",
                        "the best prompt for the base model"))
    few, direct = rows["few-shot CoT"]["prompt tokens"], rows["direct"]["prompt tokens"]
    out.append(f"Cost: a few-shot CoT prompt is {few:.0f} tokens on average, {few / direct:.1f} times the direct "
               f"prompt's {direct:.0f}, paid on every call; answers with the working run to "
               f"{rows['few-shot CoT']['answer tokens']:.0f} tokens against {rows['direct']['answer tokens']:.0f} "
               "for the number only.")
    gain = [right[a] - right[b] for a, b in (("zero-shot CoT", "direct"), ("few-shot CoT", "few-shot answers"))]
    size = f"{parameters / 1e9:.1f}B" if parameters >= 1e9 else f"{parameters / 1e6:.0f}M"
    if max(gain) <= 0:
        out.append(f"On this run chain of thought did not help a {size}-parameter model: Wei et al. (2022) report "
                   "the same for small models, whose generated working is often wrong, and gains only from about "
                   "100B parameters.")
    else:
        out.append(f"On this run chain of thought got more right for a {size}-parameter model (by {max(gain)} "
                   f"question{'s' if max(gain) > 1 else ''} of {n}; see the McNemar p above before trusting it); "
                   "Wei et al. (2022) found the gains emerge reliably only from about 100B parameters.")
    return out


def _check_rows(rows) -> dict:
    if not isinstance(rows, (list, tuple)) or not all(isinstance(r, dict) for r in rows):
        raise ConfigError("rows", short(rows), "a list of dicts, one a setting (as the lab builds them)")
    by = {r.get("setting"): r for r in rows}
    if sorted(by, key=str) != sorted(SETTINGS) or len(rows) != len(SETTINGS):
        raise ConfigError("rows", [r.get("setting") for r in rows], f"one row for each of {list(SETTINGS)}")
    sizes = set()
    for s, r in by.items():
        ok = isinstance(r.get("correct"), (list, tuple)) and r["correct"] and \
            all(isinstance(x, bool) for x in r["correct"])
        if not ok:
            raise ConfigError(f"rows[{s!r}]['correct']", short(r.get("correct")), "a non-empty list of bools, one "
                              "a held-out question")
        for key in ("prompt tokens", "answer tokens"):
            if not isinstance(r.get(key), numbers.Real) or isinstance(r.get(key), bool) or not r[key] >= 0:
                raise ConfigError(f"rows[{s!r}][{key!r}]", r.get(key), "a mean count of tokens, a number ≥ 0")
        sizes.add(len(r["correct"]))
    if len(sizes) > 1:
        raise ConfigError("rows", sorted(sizes), "the same held-out questions under every setting (as many "
                          "'correct' entries in each row)")
    if by["direct"]["prompt tokens"] <= 0:
        raise ConfigError("rows['direct']['prompt tokens']", 0, "a prompt of at least one token")
    return by
