"""Multiple-choice evaluation by log-likelihood, as MMLU- and HellaSwag-style benchmarks score a model: no
generation. For each question every candidate answer is appended to the prompt and the model's log-probabilities
of the answer's own tokens are read off one forward pass:

    log p(answer | prompt) = sum over answer tokens t of log softmax(logits[t - 1])[token t]

The candidate with the highest sum wins ("accuracy (sum)"), or with the highest mean per token ("accuracy
(mean)": the length-normalised score; a sum falls with every extra token, so it favours short answers).

Questions come from task records (a word's gloss against the glosses of other words of the same part of speech)
or from the embedded preference pairs (the gloss against a sibling word's: same hypernym, same style, another
meaning, as ftlab.align.preference_pairs draws its hard negatives)."""
from __future__ import annotations

import random

import torch

from ftlab.catalog import load_records
from ftlab.errors import ConfigError, DataError, check_choice, check_int, check_strings
from ftlab.errors import short as _short
from ftlab.evaluation import check_model
from ftlab.prompts import format_prompt
from ftlab.records import check_task_records, check_tokenizer


def answer_logprobs(model, tokenizer, prompts: list[str], answers: list[str],
                    batch_size: int = 16) -> list[tuple[float, int]]:
    """(sum of log-probabilities, number of tokens) of each answer's tokens given its prompt, both strings already
    templated (the answer is tokenised on its own and appended to the prompt's tokens; no end-of-turn token is
    added). A prompt shared by several answers (a question's candidates) runs once: its keys and values are
    cached and copied to each candidate, which then costs only its own tokens. Candidates go batch_size at a time,
    right-padded: the real tokens come first, so padding changes no score."""
    check_model(model)
    check_tokenizer(tokenizer)
    prompts = check_strings("prompts", prompts, error=DataError)
    answers = check_strings("answers", answers, error=DataError)
    batch_size = check_int("batch_size", batch_size, 1)
    if len(prompts) != len(answers):
        raise DataError(f"answers ({len(answers)}) and prompts ({len(prompts)}) are not allowed to differ in length: "
                        "one answer per prompt (repeat a prompt once for each of its candidates)", field="answers")
    groups: dict[str, list[int]] = {}  # prompt -> the positions of its answers
    tokens = []
    for i, (p, a) in enumerate(zip(prompts, answers)):
        a_ids = tokenizer(a, add_special_tokens=False)["input_ids"]
        if not a_ids:  # no token: the sum is 0 whatever the model, the mean 0/0
            raise DataError(f"answers[{i}]={_short(a)} is not allowed: an answer of at least one token",
                            field="answers")
        if not tokenizer(p, add_special_tokens=False)["input_ids"]:  # the first answer token needs a token before it
            raise DataError(f"prompts[{i}]={_short(p)} is not allowed: a prompt of at least one token", field="prompts")
        tokens.append(a_ids)
        groups.setdefault(p, []).append(i)
    out: list = [None] * len(answers)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for prompt, where in groups.items():
                p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
                for start in range(0, len(where), batch_size):
                    chunk = where[start:start + batch_size]
                    scores = _scores_after_prompt(model, p_ids, [tokens[i] for i in chunk], tokenizer.pad_token_id)
                    for i, score in zip(chunk, scores):
                        out[i] = score
    finally:
        model.train(was_training)
    return out


def _scores_after_prompt(model, p_ids: list[int], answers: list[list[int]], pad) -> list[tuple[float, int]]:
    """One prompt's forward pass (cached), then its answers in one batch on top of the cache. The prompt's last
    position predicts each answer's first token; answer position j predicts its token j + 1."""
    device = next(model.parameters()).device
    first = model(input_ids=torch.tensor([p_ids], device=device), use_cache=True)
    first_logp = torch.log_softmax(first.logits[0, -1].float(), dim=-1).cpu()
    cache = first.past_key_values
    cache.batch_repeat_interleave(len(answers))
    width = max(len(a) for a in answers)
    ids = torch.full((len(answers), width), pad if pad is not None else 0, dtype=torch.long)
    mask = torch.zeros((len(answers), len(p_ids) + width), dtype=torch.long)
    mask[:, :len(p_ids)] = 1
    for j, a in enumerate(answers):
        ids[j, :len(a)] = torch.tensor(a)
        mask[j, len(p_ids):len(p_ids) + len(a)] = 1
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), past_key_values=cache).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:, None].to(device))[..., 0].cpu()
    return [(float(first_logp[a[0]] + logp[j, :len(a) - 1].sum()), len(a)) for j, a in enumerate(answers)]


def _question(rng: random.Random, question: str, right: str, wrong: list[str], source: str) -> dict:
    """A question with its candidates in a random order (the right one is not always first: ties and a model's
    taste for a position would otherwise count as knowledge)."""
    choices = [right, *wrong]
    rng.shuffle(choices)
    return {"question": question, "choices": choices, "answer": choices.index(right), "source": source}


def choice_questions(records, n: int | None = None, k: int = 4, seed: int = 0,
                     distractors: str = "same_pos") -> list[dict]:
    """Multiple-choice questions from task records (load_records): the first n records (all if None) are asked
    with their first instruction template ("Define the verb "x"."); the right answer is the record's target, the
    k - 1 wrong ones are targets of other records of the list, drawn with `seed`. distractors="same_pos": of
    records with the same part of speech (`pos`: a noun's gloss against other nouns' glosses, so the form gives
    nothing away); "random": of any record. Returns [{"question", "choices", "answer" (index), "source"}]."""
    records = check_task_records(records, "records")
    n = len(records) if n is None else check_int("n", n, 1, len(records))
    k = check_int("k", k, 2)
    seed = check_int("seed", seed, 0)
    distractors = check_choice("distractors", distractors, ("same_pos", "random"))
    if distractors == "same_pos" and not all(isinstance(r.get("pos"), str) for r in records):
        raise ConfigError("distractors", distractors, "'random' for records without a part of speech ('pos'): "
                          "only the embedded definitions carry one")
    rng = random.Random(seed)
    questions = []
    for r in records[:n]:
        pool = sorted({o["target"] for o in records if o["target"] != r["target"]
                       and (distractors == "random" or o.get("pos") == r.get("pos"))})
        if len(pool) < k - 1:
            raise ConfigError("k", k, f"at most {len(pool) + 1} for these records: {r['source']!r} has "
                              f"{len(pool)} other {'glosses of its part of speech' if distractors == 'same_pos' else 'targets'}"
                              " to draw wrong answers from (pass more records, or a smaller k)")
        questions.append(_question(rng, format_prompt(r, 0), r["target"], rng.sample(pool, k - 1), r["source"]))
    return questions


def sibling_questions(split: str = "test", n: int | None = None, seed: int = 0) -> list[dict]:
    """Two-choice questions from the embedded preference pairs: a word's gloss against its sibling's (another
    word under the same hypernym), the hard negatives of ftlab.align.preference_pairs(negatives="sibling")."""
    rows = load_records("preferences", split, n=n, seed=seed)
    rng = random.Random(check_int("seed", seed, 0))
    return [_question(rng, r["prompt"], r["chosen"], [r["rejected"]], r["prompt"].split('"')[1]) for r in rows]


def _check_questions(questions) -> list[dict]:
    if isinstance(questions, (str, dict)) or not isinstance(questions, (list, tuple)) or not questions:
        raise DataError(f"questions={_short(questions)} is not allowed: a non-empty list of questions as "
                        "choice_questions returns them", field="questions")
    for i, q in enumerate(questions):
        ok = isinstance(q, dict) and isinstance(q.get("question"), str) and isinstance(q.get("choices"), list) \
            and len(q["choices"]) >= 2 and all(isinstance(c, str) for c in q["choices"]) \
            and isinstance(q.get("answer"), int) and not isinstance(q["answer"], bool) \
            and 0 <= q["answer"] < len(q["choices"])
        if not ok:
            raise DataError(f"questions[{i}]={_short(q)} is not allowed: a dict with 'question' (str), 'choices' "
                            "(a list of at least 2 strings) and 'answer' (the index of the right choice)",
                            field="questions")
    return list(questions)


def choice_accuracy(model, tokenizer, questions, batch_size: int = 16) -> tuple[dict, list[dict]]:
    """Scores every candidate of every question (answer_logprobs after the chat template's assistant turn) and
    returns (summary, per question). summary: questions, choices (k), chance (the mean of 1/k), accuracy (sum),
    accuracy (mean: per token), accuracy (per character: the sum over the answer's length in characters, as
    lm-evaluation-harness's acc_norm, which does not depend on the tokenizer), the share of picks that were the question's shortest candidate in tokens under each rule,
    and the mean log-probability per token of the right answers and of the wrong ones."""
    questions = _check_questions(questions)
    check_tokenizer(tokenizer)
    prompts, answers = [], []
    for q in questions:
        chat = tokenizer.apply_chat_template([{"role": "user", "content": q["question"]}], tokenize=False,
                                             add_generation_prompt=True)
        prompts += [chat] * len(q["choices"])
        answers += q["choices"]
    scores = iter(answer_logprobs(model, tokenizer, prompts, answers, batch_size=batch_size))
    per_question = []
    for q in questions:
        got = [next(scores) for _ in q["choices"]]
        sums, lengths = [s for s, _ in got], [t for _, t in got]
        means = [s / t for s, t in got]
        per_char = [s / len(c) for s, c in zip(sums, q["choices"])]
        best = lambda values: max(range(len(values)), key=values.__getitem__)  # noqa: E731
        per_question.append({"source": q.get("source", ""), "answer": q["answer"], "logprob sums": sums,
                             "tokens": lengths, "means": means, "pick (sum)": best(sums), "pick (mean)": best(means),
                             "pick (per character)": best(per_char)})
    n = len(per_question)

    def share(test) -> float:
        return sum(bool(test(p)) for p in per_question) / n

    shortest = lambda p, rule: p["tokens"][p[rule]] == min(p["tokens"])  # noqa: E731
    wrong = [m for p in per_question for i, m in enumerate(p["means"]) if i != p["answer"]]
    summary = {"questions": n, "choices": len(questions[0]["choices"]),
               "chance": sum(1 / len(q["choices"]) for q in questions) / n,
               "accuracy (sum)": share(lambda p: p["pick (sum)"] == p["answer"]),
               "accuracy (mean)": share(lambda p: p["pick (mean)"] == p["answer"]),
               "accuracy (per character)": share(lambda p: p["pick (per character)"] == p["answer"]),
               "picked the shortest (sum)": share(lambda p: shortest(p, "pick (sum)")),
               "picked the shortest (mean)": share(lambda p: shortest(p, "pick (mean)")),
               "log-prob per token, right answers": sum(p["means"][p["answer"]] for p in per_question) / n,
               "log-prob per token, wrong answers": sum(wrong) / len(wrong)}
    return summary, per_question
