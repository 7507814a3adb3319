"""Looking at what a method trained: which vocabulary tokens a learned soft prompt sits nearest to; scoring a
model's answers (a task's own score, or the four metrics of lab 10); and the check that an adapter swapped into
a model that carries several answers exactly as when loaded alone.
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from ftlab.align import answer_number
from ftlab.config import TrainConfig
from ftlab.errors import ConfigError, DataError, check_int, check_strings
from ftlab.evaluation import generate, load_metric, rouge
from ftlab.methods import adapter_on, check_model
from ftlab.models import load_for
from ftlab.prompts import chat_prompts
from ftlab.records import check_task_records
from ftlab.trained import load_trained

# how task_score scores answers (task_metric names the one a list of records gets)
EXACT_RESULT, ROUGE_L = "exact result", "ROUGE-L"


def nearest_vocabulary_tokens(model, tokenizer, k: int = 3, adapter: str = "default") -> list[dict]:
    """For each learned virtual token of a prompt-tuning model (peft), the k vocabulary tokens nearest to it by
    cosine similarity: {"virtual token", "nearest tokens", "cosine" (of the nearest)}.

    Computed on the CPU in fp32 whatever the model's device and dtype: peft hands the prompt back on the CPU
    (get_prompt_embedding_to_save) while the vocabulary stays where the model is (on a GPU the two met in one
    matmul and failed), and the vocabulary (49k x 576 for SmolLM2) is small enough for the CPU."""
    check_model(model, what="nearest_vocabulary_tokens(model, tokenizer)")
    virtual = "prompt_tuning, prefix_tuning and p_tuning have virtual tokens; only prompt tuning's are vectors " \
              "of the vocabulary's embedding space, which nearest tokens need"
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, dict) or not callable(getattr(model, "get_prompt_embedding_to_save", None)):
        carried = adapter_on(model)
        raise ConfigError("model", type(model).__name__, "a prompt-tuning model (apply_method with "
                          "method='prompt_tuning', or load_trained of such a run): this one carries "
                          f"{'a ' + carried + ' adapter' if carried else 'no adapter'}; {virtual}")
    if not isinstance(adapter, str) or adapter not in configs:
        raise ConfigError("adapter", adapter, f"one of {list(configs)} (the adapters this model carries)")
    kind = str(getattr(configs[adapter].peft_type, "value", configs[adapter].peft_type)).upper()
    if kind != "PROMPT_TUNING":
        raise ConfigError("model", type(model).__name__, f"a prompt-tuning model: its adapter {adapter!r} is "
                          f"{kind}; {virtual}")
    if not callable(getattr(tokenizer, "decode", None)):
        raise ConfigError("tokenizer", tokenizer if tokenizer is None else f"a {type(tokenizer).__name__}",
                          "the model's tokenizer (model, tokenizer = load_model(...))")
    weight = model.get_input_embeddings().weight
    k = check_int("k", k, 1, int(weight.shape[0]))
    prompt = F.normalize(model.get_prompt_embedding_to_save(adapter).detach().float().cpu(), dim=-1)
    vocab = F.normalize(weight.detach().float().cpu(), dim=-1)
    top = (prompt @ vocab.T).topk(k, dim=-1)
    return [{"virtual token": i, "nearest tokens": " | ".join(repr(tokenizer.decode([int(t)])) for t in idx),
             "cosine": float(val[0])} for i, (val, idx) in enumerate(zip(top.values, top.indices))]


def task_metric(records) -> str:
    """How answers to these task records are scored: "exact result" when every record carries the integer result
    of a sum (`result`, as the arithmetic records do), else "ROUGE-L" against each record's target."""
    records = check_task_records(records, "records")
    with_result = [isinstance(r.get("result"), numbers.Integral) and not isinstance(r.get("result"), bool)
                   for r in records]
    if all(with_result):
        return EXACT_RESULT
    if any(with_result):
        raise DataError(f"records: {sum(with_result)} of {len(records)} records carry an integer 'result' (a sum's) "
                        "and the others do not: score one task's records at a time", field="records")
    return ROUGE_L


def task_score(predictions, records) -> float:
    """Answers scored as their task asks (task_metric): for sums, the share whose result is right (the number after
    the answer's last "=", read by ftlab.align.answer_number); for the other tasks ROUGE-L F against the targets."""
    metric = task_metric(records)
    predictions = check_strings("predictions", predictions, error=DataError)
    if len(predictions) != len(records):
        raise DataError(f"predictions ({len(predictions)}) and records ({len(records)}) are not allowed to differ "
                        "in length: one answer per record is needed", field="predictions")
    if metric == EXACT_RESULT:
        return sum(answer_number(p.split("=")[-1]) == r["result"] for p, r in zip(predictions, records)) / len(records)
    return rouge(predictions, [r["target"] for r in records])["rougeL"]


def answer_scores(model, tokenizer, records, max_new_tokens: int = 32) -> tuple[dict, list[str]]:
    """The model's greedy answers to task records (chat template, ftlab.evaluation.generate) and their scores
    against the targets, through the `evaluate` metric modules: rouge1, rouge2, rougeL, rougeLsum, bleu (smoothed),
    exact_match (case and punctuation ignored) and the perplexity of the references (corpus perplexity: lower
    means the model finds the reference wording more likely). Returns (scores, answers)."""
    check_model(model, what="answer_scores(model, tokenizer, records)")
    records = check_task_records(records, "records")
    refs = [r["target"] for r in records]
    preds = generate(model, tokenizer, chat_prompts(tokenizer, records), max_new_tokens=max_new_tokens)
    scores = {**load_metric("rouge").compute(predictions=preds, references=refs),
              "bleu": load_metric("bleu").compute(predictions=preds, references=refs, smooth=True)["bleu"],
              "exact_match": load_metric("exact_match").compute(predictions=preds, references=refs,
                                                                ignore_punctuation=True)["exact_match"],
              "perplexity of the references": load_metric("perplexity").compute(
                  predictions=refs, model=model, tokenizer=tokenizer)["corpus_perplexity"]}
    return scores, preds


def logits_of(model, inputs) -> torch.Tensor:
    """The model's logits for tokenised inputs (a tokenizer's output, e.g. tokenizer(texts, return_tensors="pt",
    padding=True)), in float32 and without gradients: what two models are compared on. The inputs' tensors go to
    the model's device."""
    check_model(model, what="logits_of(model, inputs)")
    if not isinstance(inputs, Mapping) or not torch.is_tensor(inputs.get("input_ids")):
        raise ConfigError("inputs", inputs if inputs is None or isinstance(inputs, str) else type(inputs).__name__,
                          "a tokenizer's output with tensors: tokenizer(texts, return_tensors='pt', padding=True)")
    device = next(model.parameters()).device
    with torch.no_grad():
        return model(**{k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}).logits.float()


def adapter_swap_differences(served, folders, cfg, inputs) -> dict:
    """Whether swapping adapters is exact: for each adapter {name: folder} that `served` carries (one base with
    several peft adapters, switched by set_adapter), the largest |logit difference| between that adapter swapped in
    and its folder loaded alone onto a fresh base (load_for(cfg), then ftlab.trained.load_trained). 0 up to
    rounding when swapping changes nothing. `served` keeps the adapter it had active."""
    configs = getattr(served, "peft_config", None)
    if not isinstance(configs, dict) or not callable(getattr(served, "set_adapter", None)):
        raise ConfigError("served", served if served is None else type(served).__name__, "a peft model that "
                          "carries the adapters (PeftModel.from_pretrained(base, folder, adapter_name=...), then "
                          "load_adapter(folder, adapter_name=...) for each other)")
    if not isinstance(folders, dict) or not folders:
        raise ConfigError("folders", folders, "a dict {adapter name: the folder it was saved to}, at least one")
    unknown = [name for name in folders if name not in configs]
    if unknown:
        raise ConfigError("folders", unknown[0], f"names of adapters that served carries: {list(configs)}")
    if not isinstance(cfg, TrainConfig):
        raise ConfigError("cfg", cfg, "the TrainConfig the adapters were trained with (its base is loaded alone)")
    active = served.active_adapter
    differences = {}
    try:
        for name, folder in folders.items():
            served.set_adapter(name)
            swapped = logits_of(served, inputs)
            alone = load_trained(load_for(cfg)[0], folder)
            differences[name] = (swapped - logits_of(alone, inputs)).abs().max().item()
            del alone
    finally:
        served.set_adapter(active)
    return differences
