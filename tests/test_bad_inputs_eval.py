"""Bad inputs to the metrics, alignment, distillation, data-preparation and comparison functions. Each must be
refused by a ConfigError or DataError (ftlab.errors) whose message names the argument, shows the bad value and
says what is allowed, before a model runs or loads: the models here raise if they are called, and loading one
raises too. A number returned for empty or mis-typed input is the failure this table guards against."""
import math
import random

import numpy as np
import pytest
import torch

from ftlab import align, compare, data, dataprep, distill, evaluation, quant, runs
from ftlab.config import TrainConfig
from ftlab.errors import ConfigError, DataError

M = {}  # the module's tokenizer and models, filled once by the fixture below


class ModelRan(AssertionError):
    """Raised by the guarded models: a refusal came too late (or never)."""


@pytest.fixture(scope="module", autouse=True)
def models():
    import torch
    from ftlab.models import load_tokenizer, tiny_test_model
    tok = load_tokenizer("smollm2-135m-instruct")
    torch.manual_seed(0)

    def guard(module, args, kwargs):
        raise ModelRan("the model ran before the input was refused")

    guarded = tiny_test_model(tok, layers=4).eval()
    guarded.register_forward_pre_hook(guard, with_kwargs=True)
    M.update(tok=tok, model=guarded, free=tiny_test_model(tok, layers=4).eval())
    yield M
    M.clear()


@pytest.fixture(autouse=True)
def no_loading(monkeypatch):
    """A trainer that got past its checks would load weights here: fail instead."""
    import ftlab.models

    def boom(*a, **k):
        raise ModelRan("a model was loaded before the input was refused")

    monkeypatch.setattr(ftlab.models, "load_model", boom)
    monkeypatch.setattr(ftlab.models, "load_for", boom)


def cfg(tmp, **kw):
    return TrainConfig(**{"output_dir": str(tmp / "run"), "batch_size": 4, **kw})


def conv(prompt="Define dog.", completion="A domesticated canine."):
    return {"prompt": [{"role": "user", "content": prompt}], "completion": [{"role": "assistant", "content": completion}]}


def pair(prompt="Define dog.", chosen="A domesticated canine.", rejected="A large feline."):
    return {"prompt": [{"role": "user", "content": prompt}], "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


TASK = {"source": "dog", "target": "a domesticated canine", "task": "define", "pos": "noun"}
SFT = {"prompt": "Define dog.", "completion": "A domesticated canine."}


# model-facing calls, each with the guarded model and the module's tokenizer
def ppl(texts, **kw):
    return lambda tmp: evaluation.perplexity(M["model"], M["tok"], texts, **kw)


def closs(records, **kw):
    return lambda tmp: evaluation.completion_loss(M["model"], M["tok"], records, **kw)


def gen(prompts, **kw):
    return lambda tmp: evaluation.generate(M["model"], M["tok"], prompts, **kw)


def dpo(pairs, config=None, **kw):
    return lambda tmp: align.train_dpo(config if config is not None else cfg(tmp), pairs, **kw)


def grpo(prompts=None, reward=align.arithmetic_reward, **kw):
    return lambda tmp: align.train_grpo(cfg(tmp), align.sums(4) if prompts is None else prompts, reward, **kw)


def kd(records=None, config=None, **kw):
    return lambda tmp: distill.train_token_kd(M["model"], M["model"], M["tok"], records or [conv()],
                                              config if config is not None else cfg(tmp), **kw)


def shrink(keep, model=None):
    return lambda tmp: distill.shrink(model if model is not None else M["model"], keep)


def measure(**kw):
    args = {"train_records": [SFT], "val_records": [SFT], "test_records": [TASK], **kw}
    return lambda tmp: runs.run_and_measure(cfg(tmp), **args)


def fit(records=None, tokenizer="tok", seq_len=256, **kw):
    return lambda tmp: data.fit_to_length(records or [TASK], M["tok"] if tokenizer == "tok" else tokenizer,
                                          seq_len, **kw)


def few_shot(demonstrations, records=None):
    return lambda tmp: data.few_shot_prompts(M["tok"], records or [TASK], demonstrations)


def other_vocabulary():
    from ftlab.models import tiny_test_model
    return tiny_test_model()  # a 512-token vocabulary; the module's models have the tokenizer's 49152


# (id, call taking tmp_path, error class, words the message must contain: the argument (which is also the
# error's .field), the bad value as shown, and what is allowed)
CASES = [
    # --- evaluation: metrics refuse what would otherwise become a number
    ("perplexity of no texts", ppl([]), DataError, ["texts", "[]", "list of strings"]),
    ("perplexity of a bare string", ppl("a string"), DataError, ["texts", "'a string'", "list of strings", "not a str"]),
    ("perplexity of None items", ppl(["The whale swam on.", None]), DataError, ["texts", "item 1", "None"]),
    ("perplexity of texts too short", ppl(["", "a"]), DataError, ["texts", "all 2 texts", "too short", "2 tokens"]),
    ("perplexity max_length 1", ppl(["The whale swam on."], max_length=1), ConfigError,
     ["max_length", "1", "integer ≥ 2"]),
    ("completion_loss of no records", closs([]), DataError, ["records", "[]", "'prompt' and 'completion'"]),
    ("completion_loss of pairs", closs([pair()]), DataError,
     ["records", "records[0]", "'chosen'", "'prompt' and 'completion'", "preference pair"]),
    ("completion_loss of task records", closs([TASK]), DataError,
     ["records", "records[0]", "'source'", "to_prompt_completion"]),
    ("completion_loss of plain strings", closs([SFT]), DataError,
     ["records", "records[0]['prompt']", "'Define dog.'", "list of {'role': str, 'content': str} messages"]),
    ("completion_loss of one dict", closs(conv()), DataError, ["records", "{'prompt'", "list of records", "in a list"]),
    ("completion_loss of None items", closs([conv(), None]), DataError, ["records", "records[1]", "None", "a dict"]),
    ("completion_loss batch 0", closs([conv()], batch_size=0), ConfigError, ["batch_size", "0", "integer ≥ 1"]),
    ("rouge of bare strings", lambda tmp: evaluation.rouge("a", "b"), DataError,
     ["predictions", "'a'", "list of strings", "not a str"]),
    ("rouge of numbers", lambda tmp: evaluation.rouge([1, 2], ["a", "b"]), DataError,
     ["predictions", "[1, 2]", "list of strings", "item 0"]),
    ("rouge of nothing", lambda tmp: evaluation.rouge([], []), DataError, ["predictions", "[]", "at least one"]),
    ("rouge of unequal lengths", lambda tmp: evaluation.rouge(["a b", "c"], ["a b"]), DataError,
     ["references", "predictions (2)", "references (1)", "one reference per prediction"]),
    ("rouge per_example 'yes'", lambda tmp: evaluation.rouge(["a"], ["a"], per_example="yes"), ConfigError,
     ["per_example", "'yes'", "True or False"]),
    ("exact_match of unequal lengths", lambda tmp: evaluation.exact_match(["a", "b"], ["a"]), DataError,
     ["references", "predictions (2)", "references (1)", "one reference per prediction"]),
    ("exact_match with None", lambda tmp: evaluation.exact_match(["a"], [None]), DataError,
     ["references", "None", "list of strings"]),
    ("exact_match of a dict", lambda tmp: evaluation.exact_match({"a": 1}, ["a"]), DataError,
     ["predictions", "{'a': 1}", "list of strings", "not a dict"]),
    ("generate a bare string", gen("a prompt"), DataError, ["prompts", "'a prompt'", "list of strings", "not a str"]),
    ("generate nothing", gen([]), DataError, ["prompts", "[]", "at least one"]),
    ("generate token ids", gen([[1, 2, 3]]), DataError, ["prompts", "item 0", "list of strings"]),
    ("generate 0 tokens", gen(["Hi"], max_new_tokens=0), ConfigError, ["max_new_tokens", "0", "integer ≥ 1"]),
    ("generate batch 2.5", gen(["Hi"], batch_size=2.5), ConfigError, ["batch_size", "2.5", "an integer"]),
    ("generate batch True", gen(["Hi"], batch_size=True), ConfigError, ["batch_size", "True", "an integer"]),
    ("unknown metric", lambda tmp: evaluation.load_metric("bertscore"), ConfigError,
     ["metric", "'bertscore'", "one of", "'rouge'"]),
    ("metric None", lambda tmp: evaluation.load_metric(None), ConfigError, ["metric", "None", "one of"]),
    # --- align
    ("dpo beta negative", dpo([pair()], beta=-0.1), ConfigError, ["beta", "-0.1", "finite number > 0"]),
    ("dpo beta zero", dpo([pair()], beta=0), ConfigError, ["beta", "0", "> 0"]),
    ("dpo beta nan", dpo([pair()], beta=float("nan")), ConfigError, ["beta", "nan", "finite number > 0"]),
    ("dpo beta a string", dpo([pair()], beta="0.1"), ConfigError, ["beta", "'0.1'", "finite number"]),
    ("dpo on prompt/completion", dpo([conv()]), DataError,
     ["train_pairs", "train_pairs[0]", "'completion'", "'prompt' and 'chosen' and 'rejected'"]),
    ("dpo chosen None", dpo([{"prompt": "q", "chosen": None, "rejected": "r"}]), DataError,
     ["train_pairs", "train_pairs[0]['chosen']", "None", "non-empty string"]),
    ("dpo no pairs", dpo([]), DataError, ["train_pairs", "[]", "at least one record"]),
    ("dpo eval pairs a dict", dpo([pair()], eval_pairs=pair()), DataError, ["eval_pairs", "dict", "in a list"]),
    ("dpo cfg a dict", dpo([pair()], config={"model": "smollm2-135m-instruct"}), ConfigError,
     ["cfg", "{'model'", "TrainConfig"]),
    ("grpo one generation", grpo(num_generations=1), ConfigError, ["num_generations", "1", "integer ≥ 2"]),
    ("grpo generations a float", grpo(num_generations=2.0), ConfigError, ["num_generations", "2.0", "an integer"]),
    ("grpo length 0", grpo(max_completion_length=0), ConfigError, ["max_completion_length", "0", "integer ≥ 1"]),
    ("grpo temperature 0", grpo(temperature=0), ConfigError, ["temperature", "0", "> 0"]),
    ("grpo temperature inf", grpo(temperature=float("inf")), ConfigError, ["temperature", "inf", "finite"]),
    ("grpo beta negative", grpo(beta=-1), ConfigError, ["beta", "-1", "≥ 0"]),
    ("grpo reward a number", grpo(reward=42), ConfigError, ["reward_funcs", "42", "reward function"]),
    ("grpo no rewards", grpo(reward=[]), ConfigError, ["reward_funcs", "[]", "reward function"]),
    ("grpo no prompts", grpo(prompts=[]), DataError, ["prompts", "[]", "'prompt'"]),
    ("grpo prompts a string", grpo(prompts="What is 2 + 2?"), DataError, ["prompts", "'What is 2 + 2?'", "not a str"]),
    ("grpo listeners a function", grpo(listeners=print), ConfigError, ["listeners", "print", "list of functions"]),
    ("reward model without eval pairs", lambda tmp: align.train_reward_model(cfg(tmp), [pair()], None), DataError,
     ["eval_pairs", "None", "list of records"]),
    ("reward scores of plain strings",
     lambda tmp: align.reward_scores(M["model"], M["tok"], [{"prompt": "q", "chosen": "a", "rejected": "b"}]),
     DataError, ["pairs", "pairs[0]['prompt']", "'q'", "messages"]),
    ("reward scores batch 0", lambda tmp: align.reward_scores(M["model"], M["tok"], [pair()], batch_size=0),
     ConfigError, ["batch_size", "0", "integer ≥ 1"]),
    ("preference pairs n 0", lambda tmp: align.preference_pairs(n=0), ConfigError, ["n", "0", "integer ≥ 1"]),
    ("preference pairs n '5'", lambda tmp: align.preference_pairs(n="5"), ConfigError, ["n", "'5'", "an integer"]),
    ("random negatives of 1", lambda tmp: align.preference_pairs(n=1, negatives="random"), ConfigError,
     ["n", "1", "at least 2"]),
    ("negatives unknown", lambda tmp: align.preference_pairs(negatives="nearby"), ConfigError,
     ["negatives", "'nearby'", "one of", "'sibling'"]),
    ("sums n negative", lambda tmp: align.sums(-1), ConfigError, ["n", "-1", "integer ≥ 1"]),
    ("sums n a numpy float", lambda tmp: align.sums(np.float64(3.0)), ConfigError, ["n", "3.0", "an integer"]),
    ("sums max 0", lambda tmp: align.sums(3, max_value=0), ConfigError, ["max_value", "0", "integer ≥ 1"]),
    ("series of a dict", lambda tmp: align.series({"step": 1, "loss": 2.0}, "loss"), DataError,
     ["history", "{'step': 1", "log history"]),
    ("answer of a number", lambda tmp: align.answer_number(7), DataError, ["text", "7", "a string"]),
    # --- distill
    ("kd temperature nan", kd(temperature=float("nan")), ConfigError, ["temperature", "nan", "finite number > 0"]),
    ("kd temperature negative", kd(temperature=-1), ConfigError, ["temperature", "-1", "> 0"]),
    ("kd beta above 1", kd(beta=1.5), ConfigError, ["beta", "1.5", "≤ 1"]),
    ("kd beta numpy nan", kd(beta=np.float64("nan")), ConfigError, ["beta", "nan", "finite"]),
    ("kd on pairs", kd(records=[pair()]), DataError, ["train_records", "train_records[0]", "preference pair"]),
    ("kd on task records", kd(records=[TASK]), DataError, ["train_records", "'source'", "to_prompt_completion"]),
    ("kd cfg a dict", kd(config={}), ConfigError, ["cfg", "{}", "TrainConfig"]),
    ("shrink a block twice", shrink([1, 1]), ConfigError, ["keep", "[1, 1]", "distinct", "layer 1 is listed twice"]),
    ("shrink True", shrink(True), ConfigError, ["keep", "True", "a count from 1 to 4"]),
    ("shrink a float index", shrink([0, 1.0]), ConfigError, ["keep", "[0, 1.0]", "layer indices in 0..3"]),
    ("shrink a bool index", shrink([0, True]), ConfigError, ["keep", "[0, True]", "layer indices"]),
    ("shrink nothing", shrink([]), ConfigError, ["keep", "[]", "layer indices in 0..3"]),
    ("shrink a string", shrink("2"), ConfigError, ["keep", "'2'", "a count from 1 to 4"]),
    ("shrink numpy too many", shrink(np.int64(9)), ConfigError, ["keep", "9", "between 1 and the teacher's 4"]),
    ("shrink a name", shrink(2, model="smollm2-135m-instruct"), ConfigError,
     ["model", "'smollm2-135m-instruct'", "model.model.layers"]),
    ("teacher answers of nothing",
     lambda tmp: distill.with_teacher_answers(M["model"], M["tok"], []), DataError, ["train_records", "[]", "'prompt'"]),
    ("teacher answers 0 tokens",
     lambda tmp: distill.with_teacher_answers(M["model"], M["tok"], [conv()], max_new_tokens=0), ConfigError,
     ["max_new_tokens", "0", "integer ≥ 1"]),
    ("against teacher of task records",
     lambda tmp: distill.against_teacher(M["model"], M["model"], M["tok"], [TASK]), DataError,
     ["records", "records[0]", "'source'"]),
    ("against teacher of nothing",
     lambda tmp: distill.against_teacher(M["model"], M["model"], M["tok"], []), DataError, ["records", "[]"]),
    ("against teacher batch -2",
     lambda tmp: distill.against_teacher(M["model"], M["model"], M["tok"], [conv()], batch_size=-2), ConfigError,
     ["batch_size", "-2", "integer ≥ 1"]),
    # --- dataprep
    ("dedupe without target", lambda tmp: dataprep.dedupe([{"source": "x"}]), DataError,
     ["records", "records[0]['target']", "missing", "a string"]),
    ("dedupe of one dict", lambda tmp: dataprep.dedupe({"source": "x", "target": "y"}), DataError,
     ["records", "dict", "in a list"]),
    ("dedupe key a name", lambda tmp: dataprep.dedupe([TASK], key="source"), ConfigError,
     ["key", "'source'", "a function"]),
    ("dedupe key returns a number", lambda tmp: dataprep.dedupe([TASK], key=len), DataError,
     ["key", "int", "return a string"]),
    ("augment how unknown", lambda tmp: dataprep.augment([TASK], "back translation"), ConfigError,
     ["how", "'back translation'", "one of", "'word swap'"]),
    ("augment source None", lambda tmp: dataprep.augment([{"source": None, "target": "t"}], "word swap"), DataError,
     ["records", "records[0]['source']", "None", "a string"]),
    ("augment seed a float", lambda tmp: dataprep.augment([TASK], "word swap", seed=0.5), ConfigError,
     ["seed", "0.5", "an integer"]),
    ("deletion p 1.5", lambda tmp: dataprep.word_deletion("a b c", p=1.5), ConfigError, ["p", "1.5", "≤ 1"]),
    ("typo p nan", lambda tmp: dataprep.typo_noise("abc", p=float("nan")), ConfigError, ["p", "nan", "finite"]),
    ("synonyms rng a seed", lambda tmp: dataprep.synonym_replace("a big dog", rng=0), ConfigError,
     ["rng", "0", "random.Random"]),
    ("swap n negative", lambda tmp: dataprep.word_swap("a b", n=-1), ConfigError, ["n", "-1", "integer ≥ 0"]),
    ("scrub None", lambda tmp: dataprep.scrub_pii(None), DataError, ["text", "None", "a string"]),
    # --- compare
    ("compare a bare name", lambda tmp: compare.compare_methods(cfg(tmp), "lora", [SFT], [SFT], [TASK]), ConfigError,
     ["names", "'lora'", "list of strings"]),
    ("compare a misspelt name", lambda tmp: compare.compare_methods(cfg(tmp), ["lora", "lorra"], [SFT], [SFT], [TASK]),
     ConfigError, ["methods", "'lorra'", "names from"]),
    ("compare a name twice", lambda tmp: compare.compare_methods(cfg(tmp), ["lora", "lora"], [SFT], [SFT], [TASK]),
     ConfigError, ["names", "['lora', 'lora']", "distinct names", "listed twice"]),
    ("compare 0 tokens",
     lambda tmp: compare.compare_methods(cfg(tmp), ["lora"], [SFT], [SFT], [TASK], max_new_tokens=0), ConfigError,
     ["max_new_tokens", "0", "integer ≥ 1"]),
    ("variant of no config", lambda tmp: compare.variant("lora", None), ConfigError, ["cfg", "None", "TrainConfig"]),
    ("measure test pairs", measure(test_records=[pair()]), DataError, ["test_records", "test_records[0]", "preference"]),
    ("measure train pairs", measure(train_records=[pair()]), DataError, ["train_records", "preference pair"]),
    ("measure eval_before 'no'", measure(eval_before="no"), ConfigError, ["eval_before", "'no'", "True or False"]),
    # --- records and data: paths, argument types, and each function's record shape checked at its entry
    ("read_jsonl of None", lambda tmp: data.read_jsonl(None), ConfigError,
     ["path", "None", "a file path", "pathlib.Path"]),
    ("read_json of a number", lambda tmp: data.read_json(3), ConfigError, ["path", "3", "a file path"]),
    ("read_jsonl required a string", lambda tmp: data.read_jsonl(tmp / "x.jsonl", required="prompt"), ConfigError,
     ["required", "'prompt'", "list of strings", "not a str"]),
    ("read_json required a string", lambda tmp: data.read_json(tmp / "x.json", required="prompt"), ConfigError,
     ["required", "'prompt'", "list of strings", "not a str"]),
    ("template True", lambda tmp: data.to_prompt_completion([TASK], template=True), DataError,
     ["template", "True", "'random' or an index", "not a bool"]),
    ("template a float", lambda tmp: data.to_prompt_completion([TASK], template=1.0), DataError,
     ["template", "1.0", "'random' or an index"]),
    ("template out of range", lambda tmp: data.format_prompt(TASK, np.int64(4)), DataError,
     ["template", "4", "an index from 0 to 3"]),
    ("format a record that is a string", lambda tmp: data.format_prompt("dog"), DataError,
     ["record", "'dog'", "task record", "'source'"]),
    ("chat 'no'", lambda tmp: data.to_prompt_completion([TASK], chat="no"), ConfigError,
     ["chat", "'no'", "True or False"]),
    ("seed a string", lambda tmp: data.to_prompt_completion([TASK], template="random", seed="1"), ConfigError,
     ["seed", "'1'", "integer ≥ 0"]),
    ("chat prompts of prompt/completion", lambda tmp: data.chat_prompts(M["tok"], [SFT]), DataError,
     ["records", "records[0]['source']", "missing", "load_records"]),
    ("chat prompts of one record", lambda tmp: data.chat_prompts(M["tok"], TASK), DataError,
     ["records", "dict", "in a list"]),
    ("chat prompts without tokenizer", lambda tmp: data.chat_prompts(None, [TASK]), ConfigError,
     ["tokenizer", "None", "the model's tokenizer", "load_model"]),
    ("few-shot demonstrations None", few_shot(None), DataError, ["demonstrations", "None", "list of records"]),
    ("few-shot demonstration without target", few_shot([{"source": "x"}]), DataError,
     ["demonstrations", "demonstrations[0]['target']", "missing"]),
    ("few-shot demonstrations one record", few_shot(TASK), DataError, ["demonstrations", "dict", "in a list"]),
    ("few-shot demonstrations prompt/completion", few_shot([conv()]), DataError,
     ["demonstrations", "demonstrations[0]['source']", "missing"]),
    ("few-shot of prompt/completion records", few_shot([], records=[conv()]), DataError,
     ["records", "records[0]['source']", "missing"]),
    ("few-shot without tokenizer", lambda tmp: data.few_shot_prompts(None, [TASK], []), ConfigError,
     ["tokenizer", "None", "the model's tokenizer"]),
    ("loss batches batch 0", lambda tmp: data.loss_batches(M["tok"], [conv()], 0), ConfigError,
     ["batch_size", "0", "integer ≥ 1"]),
    ("loss batches batch '2'", lambda tmp: data.loss_batches(M["tok"], [conv()], "2"), ConfigError,
     ["batch_size", "'2'", "an integer"]),
    ("loss batches of task records", lambda tmp: data.loss_batches(M["tok"], [TASK], 2), DataError,
     ["records", "records[0]", "'source'", "to_prompt_completion(records)", "chat=True"]),
    ("loss batches of plain strings", lambda tmp: data.loss_batches(M["tok"], [SFT], 2), DataError,
     ["records", "records[0]['prompt']", "'Define dog.'", "messages", "to_prompt_completion(records)"]),
    ("loss batches without tokenizer", lambda tmp: data.loss_batches(None, [conv()], 2), ConfigError,
     ["tokenizer", "None", "the model's tokenizer"]),
    ("fit seq_len a string", fit(seq_len="256"), ConfigError, ["seq_len", "'256'", "integer ≥ 8"]),
    ("fit seq_len 4", fit(seq_len=4), ConfigError, ["seq_len", "4", "integer ≥ 8"]),
    ("fit reserve a string", fit(reserve="64"), ConfigError, ["reserve", "'64'", "integer ≥ 0"]),
    ("fit reserve negative", fit(reserve=-1000), ConfigError, ["reserve", "-1000", "integer ≥ 0"]),
    ("fit reserve all of seq_len", fit(reserve=256), DataError,
     ["seq_len", "seq_len=256 is too short", "reserve=256", "tokens are needed"]),
    ("fit without tokenizer", fit(tokenizer=None), ConfigError, ["tokenizer", "None", "the model's tokenizer"]),
    ("sft data cfg a dict", lambda tmp: data.sft_data({"dataset": "definitions"}, M["tok"]), ConfigError,
     ["cfg", "{'dataset'", "TrainConfig"]),
    ("sft data n_validation 0", lambda tmp: data.sft_data(cfg(tmp, dataset="definitions"), M["tok"], n_validation=0),
     ConfigError, ["n_validation", "0", "integer ≥ 1"]),
    ("text n -1", lambda tmp: data.load_text(n=-1), ConfigError, ["n", "-1", "integer ≥ 1"]),
    ("text n 0", lambda tmp: data.load_text(n=0), ConfigError, ["n", "0", "integer ≥ 1"]),
    ("text n '3'", lambda tmp: data.load_text(n="3"), ConfigError, ["n", "'3'", "an integer"]),
    ("text name in capitals", lambda tmp: data.load_text("Moby_Dick"), DataError,
     ["name", "'Moby_Dick'", "one of ['moby_dick']", "did you mean 'moby_dick'"]),
    ("text split unknown", lambda tmp: data.load_text(split="dev"), DataError, ["split", "'dev'", "one of"]),
    # --- evaluation: blank references, and the model and tokenizer checked before anything runs
    ("rouge of blank texts", lambda tmp: evaluation.rouge(["   "], ["   "]), DataError,
     ["references", "references[0]", "'   '", "a reference with some text"]),
    ("rouge of a blank reference", lambda tmp: evaluation.rouge(["a b", "c"], ["a b", "  "]), DataError,
     ["references", "references[1]", "'  '", "nothing to score against"]),
    ("exact_match of a blank reference", lambda tmp: evaluation.exact_match(["a"], ["  "]), DataError,
     ["references", "references[0]", "'  '", "a reference with some text"]),
    ("generate without tokenizer", lambda tmp: evaluation.generate(M["model"], None, ["Hi"]), ConfigError,
     ["tokenizer", "None", "the model's tokenizer"]),
    ("generate without model", lambda tmp: evaluation.generate(None, M["tok"], ["Hi"]), ConfigError,
     ["model", "None", "torch.nn.Module", "load_model"]),
    ("generate with a model name", lambda tmp: evaluation.generate("smollm2-135m-instruct", M["tok"], ["Hi"]),
     ConfigError, ["model", "'smollm2-135m-instruct'", "a loaded model"]),
    ("completion_loss without tokenizer", lambda tmp: evaluation.completion_loss(M["model"], None, [conv()]),
     ConfigError, ["tokenizer", "None", "the model's tokenizer"]),
    ("completion_loss without model", lambda tmp: evaluation.completion_loss(None, M["tok"], [conv()]),
     ConfigError, ["model", "None", "torch.nn.Module"]),
    ("perplexity without tokenizer", lambda tmp: evaluation.perplexity(M["model"], None, ["The whale swam on."]),
     ConfigError, ["tokenizer", "None", "the model's tokenizer"]),
    # --- align: the reward's lists, the plotted series, and what the trainers train
    ("reward of more results than answers", lambda tmp: align.arithmetic_reward(["4"], [4, 5]), DataError,
     ["result", "2 numbers", "1 completions", "one right number per completion"]),
    ("reward of None completions", lambda tmp: align.arithmetic_reward(None, [4]), DataError,
     ["completions", "None", "a list of answers"]),
    ("reward of a bare answer", lambda tmp: align.arithmetic_reward("4", [4]), DataError,
     ["completions", "'4'", "a list of answers", "not a str"]),
    ("reward result a bare int", lambda tmp: align.arithmetic_reward(["4"], 4), DataError,
     ["result", "4", "a list of the right numbers"]),
    ("reward result strings", lambda tmp: align.arithmetic_reward(["4"], ["4"]), DataError,
     ["result", "result[0]='4'", "a number"]),
    ("reward completion a number", lambda tmp: align.arithmetic_reward([4], [4]), DataError,
     ["completions", "completions[0]=4", "a string"]),
    ("reward completion an empty message list", lambda tmp: align.arithmetic_reward([[]], [4]), DataError,
     ["completions", "completions[0]=[]", "list of messages"]),
    ("series misspelt key", lambda tmp: align.series([{"step": 1, "rewards/margins": 0.5}], "rewards/margin"),
     DataError, ["key", "'rewards/margin'", "no entry", "['rewards/margins']"]),
    ("series of an empty history", lambda tmp: align.series([], "loss"), DataError,
     ["key", "'loss'", "the history is empty"]),
    ("series of a None value", lambda tmp: align.series([{"step": 1, "loss": None}], "loss"), DataError,
     ["history", "step 1", "'loss'", "None", "a number"]),
    ("dpo on a QLoRA cfg", lambda tmp: align.train_dpo(cfg(tmp, method="qlora", bits=4), [pair()]), ConfigError,
     ["method", "'qlora'", "'lora'", "LoRA adapters", "unquantised"]),
    ("dpo on an 8-bit base", lambda tmp: align.train_dpo(cfg(tmp, bits=8), [pair()]), ConfigError,
     ["bits", "8", "16 or 32", "8- or 4-bit base"]),
    ("grpo with full fine-tuning", lambda tmp: align.train_grpo(cfg(tmp, method="full"), align.sums(4),
                                                                align.arithmetic_reward), ConfigError,
     ["method", "'full'", "'lora'", "LoRA adapters"]),
    ("reward model on a 4-bit base",
     lambda tmp: align.train_reward_model(cfg(tmp, method="qlora", bits=4), [pair()], [pair()]), ConfigError,
     ["method", "'qlora'", "'lora'"]),
    # --- distill: block order, vocabularies, models that are not models
    ("shrink reversed", shrink([1, 0]), ConfigError, ["keep", "[1, 0]", "increasing order", "e.g. [0, 1]"]),
    ("shrink numpy out of order", shrink(np.array([2, 0, 3])), ConfigError,
     ["keep", "array([2, 0, 3])", "increasing order", "[0, 2, 3]"]),
    ("against teacher of another vocabulary",
     lambda tmp: distill.against_teacher(other_vocabulary(), M["model"], M["tok"], [conv()]), ConfigError,
     ["student", "'LlamaForCausalLM'", "the teacher's vocabulary", "512", "49152"]),
    ("against teacher without teacher",
     lambda tmp: distill.against_teacher(M["model"], None, M["tok"], [conv()]), ConfigError,
     ["teacher", "None", "torch.nn.Module"]),
    ("kd of no student", lambda tmp: distill.train_token_kd(None, M["model"], M["tok"], [conv()], cfg(tmp)),
     ConfigError, ["student", "None", "torch.nn.Module"]),
    ("kd teacher a name",
     lambda tmp: distill.train_token_kd(M["model"], "smollm2-135m-instruct", M["tok"], [conv()], cfg(tmp)),
     ConfigError, ["teacher", "'smollm2-135m-instruct'", "a loaded model"]),
    ("kd of another vocabulary",
     lambda tmp: distill.train_token_kd(other_vocabulary(), M["model"], M["tok"], [conv()], cfg(tmp)), ConfigError,
     ["student", "'LlamaForCausalLM'", "512", "49152"]),
    ("kd without tokenizer", lambda tmp: distill.train_token_kd(M["model"], M["model"], None, [conv()], cfg(tmp)),
     ConfigError, ["tokenizer", "None", "the model's tokenizer"]),
    ("teacher answers without teacher", lambda tmp: distill.with_teacher_answers(None, M["tok"], [conv()]),
     ConfigError, ["teacher", "None", "torch.nn.Module"]),
    # --- quant: bit widths int8 can hold, block sizes that divide, tensors
    ("absmax bits 1", lambda tmp: quant.absmax_quantize(torch.randn(4, 4), bits=1), ConfigError,
     ["bits", "1", "integer from 2 to 8"]),
    ("absmax bits 9", lambda tmp: quant.absmax_quantize(torch.randn(4, 4), bits=9), ConfigError,
     ["bits", "9", "integer from 2 to 8"]),
    ("absmax bits a float", lambda tmp: quant.absmax_quantize(torch.randn(4, 4), bits=8.0), ConfigError,
     ["bits", "8.0", "an integer"]),
    ("absmax blocksize 3 of 16", lambda tmp: quant.absmax_quantize(torch.randn(4, 4), bits=4, blocksize=3),
     ConfigError, ["blocksize", "3", "dividing the tensor's 16 values"]),
    ("absmax blocksize 0", lambda tmp: quant.absmax_quantize(torch.randn(4, 4), bits=4, blocksize=0), ConfigError,
     ["blocksize", "0", "positive integer"]),
    ("absmax of a list", lambda tmp: quant.absmax_quantize([1.0, 2.0]), ConfigError,
     ["w", "[1.0, 2.0]", "torch tensor"]),
    ("absmax of an empty tensor", lambda tmp: quant.absmax_quantize(torch.zeros(0)), ConfigError,
     ["w", "tensor([])", "non-empty torch tensor"]),
    ("dequantize bits 1", lambda tmp: quant.absmax_dequantize(torch.ones(2, 2, dtype=torch.int8), torch.ones(2, 1), 1),
     ConfigError, ["bits", "1", "integer from 2 to 8"]),
    ("quantization errors blocksize 0", lambda tmp: quant.quantization_errors(torch.randn(64, 64), blocksize=0),
     ConfigError, ["blocksize", "0", "one of [32, 64", "bitsandbytes"]),
    ("quantization errors blocksize 16", lambda tmp: quant.quantization_errors(torch.randn(64, 64), blocksize=16),
     ConfigError, ["blocksize", "16", "one of [32, 64", "dividing the tensor's 4096 values"]),
    ("quantization errors of a list", lambda tmp: quant.quantization_errors([0.5, 1.0]), ConfigError,
     ["w", "[0.5, 1.0]", "torch tensor"]),
    ("storage of None", lambda tmp: quant.storage_bytes(None), ConfigError, ["model", "None", "torch.nn.Module"]),
]


def test_the_table_is_large_and_ids_are_unique():
    assert len(CASES) >= 45
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("call,error,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_a_clear_message(call, error, words, tmp_path):
    with pytest.raises(error) as info:
        call(tmp_path)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} is not in the message: {message}"
    if getattr(info.value, "field", None) is not None:  # the argument at fault, for the panel to show it beside
        assert info.value.field == words[0]


# --- what was valid stays valid: numpy integers where ints are expected, and the old results


def test_numpy_integers_are_taken_where_ints_are_expected():
    out = evaluation.generate(M["free"], M["tok"], ["Hi", "Hello there"], max_new_tokens=np.int64(2),
                              batch_size=np.int64(1))
    assert len(out) == 2 and all(isinstance(o, str) for o in out)
    assert distill.shrink(M["free"], np.int64(2)).ftlab_kept_layers == [0, 3]
    assert distill.shrink(M["free"], np.array([0, 2])).ftlab_kept_layers == [0, 2]  # increasing: blocks in order
    assert align.sums(np.int64(3), seed=np.int64(1)) == align.sums(3, seed=1)
    assert dataprep.word_swap("a b c d", n=np.int64(1), rng=random.Random(1)) == \
        dataprep.word_swap("a b c d", n=1, rng=random.Random(1))


def test_valid_inputs_still_give_their_numbers():
    assert evaluation.exact_match([" Paris ", "London"], ["paris", "Rome"]) == 0.5
    assert evaluation.rouge(("the cat",), ("the cat",))["rouge1"] == 1.0  # tuples are lists of strings too
    # a text too short to score is skipped, as before, when others can be scored
    value = evaluation.perplexity(M["free"], M["tok"], ["a", "The whale swam on through the night."])
    assert math.isfinite(value) and value > 1
    assert dataprep.dedupe([TASK, dict(TASK)]) == ([TASK], [TASK])


# --- what must now be accepted: paths, Windows files, numpy template indices; refusals that leave nothing changed

GOOD = (b'{"prompt": "2+2?", "completion": "4"}\n{"prompt": "3+3?", "completion": "6"}\n'
        b'{"prompt": "1+1?", "completion": "2"}\n')


def test_paths_byte_order_marks_crlf_and_capital_suffixes_are_read(tmp_path):
    from pathlib import Path
    plain = tmp_path / "plain.jsonl"
    plain.write_bytes(GOOD)
    expected = data.read_jsonl(str(plain))
    assert data.read_jsonl(Path(plain), required=("prompt", "completion")) == expected  # a Path, a tuple
    assert data.read_jsonl(plain, required=["prompt"]) == expected  # a list of names
    variants = {"bom.jsonl": b"\xef\xbb\xbf" + GOOD, "crlf.jsonl": GOOD.replace(b"\n", b"\r\n"),
                "bomcrlf.jsonl": b"\xef\xbb\xbf" + GOOD.replace(b"\n", b"\r\n"), "upper.JSONL": GOOD}
    for name, content in variants.items():
        (tmp_path / name).write_bytes(content)
        assert data.read_jsonl(tmp_path / name) == expected, name
    as_json = b"\xef\xbb\xbf" + ("[" + ",".join(l.decode() for l in GOOD.splitlines()) + "]").encode()
    (tmp_path / "bom.json").write_bytes(as_json)
    (tmp_path / "upper.JSON").write_bytes(as_json.replace(b"\n", b"\r\n"))
    assert data.read_json(tmp_path / "bom.json") == expected
    reference = data.load_records(str(plain), "train")
    for name in (*variants, "bom.json", "upper.JSON"):
        assert data.load_records(tmp_path / name, "train") == reference, name  # pathlib.Path, as a str is
        assert data.load_records(str(tmp_path / name), "validation") == data.load_records(str(plain), "validation")


def test_numpy_template_indices_and_valid_arguments_are_taken():
    assert data.to_prompt_completion([TASK], template=np.int64(1)) == data.to_prompt_completion([TASK], template=1)
    assert data.format_prompt(TASK, np.int32(2)) == data.format_prompt(TASK, 2)
    assert data.to_prompt_completion([TASK], chat=np.bool_(False)) == data.to_prompt_completion([TASK], chat=False)
    assert data.to_prompt_completion([TASK], "random", seed=np.int64(3)) == data.to_prompt_completion([TASK], "random",
                                                                                                     seed=3)
    assert len(data.chat_prompts(M["tok"], (TASK,), template=np.int64(1))) == 1
    zero = data.few_shot_prompts(M["tok"], [TASK], [])  # an empty demonstration list is the zero-shot prompt
    assert zero == data.chat_prompts(M["tok"], [TASK]) and len(data.few_shot_prompts(M["tok"], [TASK], [TASK])) == 1
    assert [b["input_ids"].shape[0] for b in data.loss_batches(M["tok"], [conv(), conv()], np.int64(1))] == [1, 1]
    assert data.fit_to_length([TASK], M["tok"], np.int64(64), reserve=np.int64(0)) == [TASK]
    assert data.fit_to_length([], M["tok"], 128) == []
    assert len(data.load_text(n=np.int64(2))) == 2 and len(data.load_text(n=None)) == 100


def test_blank_predictions_are_scored_and_failed_generation_restores_the_tokenizer():
    assert evaluation.exact_match(["", "a"], ["b", "a"]) == 0.5  # a blank answer is a wrong answer, not an error
    assert evaluation.rouge(["  ", "a b"], ["a b", "a b"], per_example=True)["rouge1"] == [0.0, 1.0]
    side = M["tok"].padding_side
    with pytest.raises(ModelRan):  # the guarded model fails inside generate: padding_side is put back
        evaluation.generate(M["model"], M["tok"], ["Hi"])
    assert M["tok"].padding_side == side
    with pytest.raises(ConfigError):
        evaluation.generate(None, M["tok"], ["Hi"])
    assert M["tok"].padding_side == side


def test_rewards_and_series_take_what_trl_and_the_trainers_give():
    chat = [[{"role": "assistant", "content": "2 + 5 = 7"}], [{"role": "assistant", "content": "8"}]]
    assert align.arithmetic_reward(chat, [7, 7], prompts=[[], []], trainer_state=None) == [1.0, 0.0]
    assert align.arithmetic_reward(("7", "The answer is 8."), (7, np.int64(8))) == [1.0, 1.0]
    history = [{"step": 1, "loss": np.float32(0.5)}, {"step": 2, "eval_loss": 1.0}, {"step": 2, "loss": 0.25}]
    assert align.series(history, "loss") == [(1, 0.5), (2, 0.25)]


def test_quantisation_arithmetic_takes_what_lab_05_gives():
    torch.manual_seed(0)
    w = torch.randn(8, 16)
    q, s = quant.absmax_quantize(w, bits=8)
    assert q.dtype == torch.int8 and (quant.absmax_dequantize(q, s, 8) - w).abs().max() <= s.max() / 254 + 1e-6
    q16, _ = quant.absmax_quantize(w.half(), bits=np.int64(8))
    assert q16.shape == w.shape and q16.dtype == torch.int8
    q4, s4 = quant.absmax_quantize(w, bits=2, blocksize=np.int64(32))
    assert q4.shape == (4, 32) and q4.abs().max() <= 1
    errors = quant.quantization_errors(torch.randn(64, 64) * 0.02, blocksize=32)
    assert set(errors) == {"int8 (absmax per row)", "int4 (absmax per 32)", "nf4 (bitsandbytes, per 32)",
                           "fp4 (bitsandbytes, per 32)"}
    assert quant.storage_bytes(M["free"]) > 0
