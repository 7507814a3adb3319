"""Bad inputs to the metrics, alignment, distillation, data-preparation and comparison functions. Each must be
refused by a ConfigError or DataError (ftlab.errors) whose message names the argument, shows the bad value and
says what is allowed, before a model runs or loads: the models here raise if they are called, and loading one
raises too. A number returned for empty or mis-typed input is the failure this table guards against."""
import math
import random

import numpy as np
import pytest

from ftlab import align, compare, dataprep, distill, evaluation
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
    return lambda tmp: compare.measure_run(cfg(tmp), **args)


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
    assert distill.shrink(M["free"], np.array([2, 0])).ftlab_kept_layers == [2, 0]  # the order given is kept
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
