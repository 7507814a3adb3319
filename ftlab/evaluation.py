"""Metrics through `evaluate`, from local metric modules (ftlab/metrics/*) so they work offline,
plus batched greedy generation for before/after comparisons.

A metric never turns a caller's mistake into a number: empty or mis-typed input, a bare string where a list
of strings is meant (its characters would be scored), lists of different lengths and records of the wrong
shape are refused with a ConfigError or DataError (ftlab.errors) before a model runs."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch

from ftlab.batches import loss_batches
from ftlab.errors import ConfigError, DataError, check_bool, check_choice, check_int, check_number, check_strings
from ftlab.records import check_conversations, check_tokenizer  # ftlab.align and ftlab.distill import them from here

METRICS_DIR = Path(__file__).resolve().parent / "metrics"
_cache: dict = {}


def load_metric(name: str):
    """evaluate.load on ftlab's local module folder (the hub's "rouge" needs network)."""
    # lazy: evaluate takes seconds to import (it loads datasets); only scoring needs it, not generation, the
    # losses or the record checks that ftlab.align and ftlab.distill import from here
    import evaluate
    known = sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())
    name = check_choice("metric", name, known)
    if name not in _cache:
        _cache[name] = evaluate.load(str(METRICS_DIR / name))
    return _cache[name]


def _pairs_of_texts(predictions, references) -> None:
    """Two non-empty lists of strings, one reference per prediction, no reference blank. A blank prediction is
    an answer (a bad one) and is scored; a blank reference has nothing to score against (every metric would
    say 0, or 1 for a blank answer) and is refused."""
    check_strings("predictions", predictions, error=DataError)
    check_strings("references", references, error=DataError)
    if len(predictions) != len(references):
        raise DataError(f"predictions ({len(predictions)}) and references ({len(references)}) are not allowed to "
                        "differ in length: one reference per prediction is needed", field="references")
    blank = [i for i, r in enumerate(references) if not r.strip()]
    if blank:
        raise DataError(f"references[{blank[0]}]={references[blank[0]]!r} is not allowed: a reference with some text "
                        f"(a blank reference has nothing to score against; {len(blank)} of {len(references)} are "
                        "blank)", field="references")


def check_model(model, field: str = "model"):
    """A loaded torch model (what load_model returns), before it is asked to run: None or a name would
    otherwise fail deep inside as an AttributeError."""
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(field, model, "a loaded model, a torch.nn.Module (ftlab.models.load_model returns it with "
                          "its tokenizer)")
    return model


def rouge(predictions: list[str], references: list[str], per_example: bool = False) -> dict:
    """ROUGE-1/2/L/Lsum F-measures (mean over examples, or the per-example lists)."""
    _pairs_of_texts(predictions, references)
    per_example = check_bool("per_example", per_example)
    return load_metric("rouge").compute(predictions=list(predictions), references=list(references),
                                        use_aggregator=not per_example)


def exact_match(predictions: list[str], references: list[str]) -> float:
    """Share of predictions equal to the reference after stripping whitespace and case."""
    _pairs_of_texts(predictions, references)
    norm = lambda s: " ".join(s.lower().split())  # noqa: E731
    return sum(norm(p) == norm(r) for p, r in zip(predictions, references)) / len(references)


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 32, batch_size: int = 8, *,
             temperature: float | None = None, top_p: float = 1.0) -> list[str]:
    """Completions of already-templated prompts, batched with left padding: greedy, or sampled at `temperature`
    (with nucleus `top_p`; seed torch first for a repeatable draw) when a temperature is given."""
    prompts = check_strings("prompts", prompts, error=DataError)  # a bare string would be generated per character
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    decoding = {"do_sample": False} if temperature is None else {
        "do_sample": True, "temperature": check_number("temperature", temperature, 0, lo_open=True),
        "top_p": check_number("top_p", top_p, 0, 1, lo_open=True)}
    check_model(model)
    if not callable(getattr(model, "generate", None)):
        raise ConfigError("model", type(model).__name__, "a model that generates text (with .generate, e.g. "
                          "...ForCausalLM as load_model returns it)")
    check_tokenizer(tokenizer)
    side = tokenizer.padding_side
    was_training = model.training
    out = []
    try:
        tokenizer.padding_side = "left"  # decoder-only: pad on the left so every row continues from its end
        model.eval()
        device = next(model.parameters()).device
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(prompts[i:i + batch_size], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
            with torch.no_grad(), warnings.catch_warnings():
                # peft says it ignores position ids for soft prompts on every call: true, and not the user's doing
                warnings.filterwarnings("ignore", message="Position ids are not supported")
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                     **decoding)
            new = gen[:, enc["input_ids"].shape[1]:]  # the prompt's tokens cut off
            out += [s.strip() for s in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


def scored_batches(tokenizer, records, batch_size, field: str = "records") -> list[dict]:
    """ftlab.data.loss_batches of checked conversational prompt/completion records, refused when no completion
    token is left to score (the mean would be 0/0)."""
    check_tokenizer(tokenizer)
    records = check_conversations(field, records)
    batches = loss_batches(tokenizer, records, check_int("batch_size", batch_size, 1))
    if not sum(int((b["labels"] != -100).sum()) for b in batches):
        raise DataError(f"{field}: none of the {len(records)} records has a completion token to score", field=field)
    return batches


def completion_loss(model, tokenizer, records: list[dict], batch_size: int = 8) -> float:
    """Mean cross-entropy per completion token of conversational prompt/completion records: the held-out loss
    on the answers alone, comparable between models however they were trained (the trainer's eval_loss
    covers whatever the run's loss covered, prompt tokens included when completion_only_loss=False)."""
    check_model(model)
    batches = scored_batches(tokenizer, records, batch_size)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
            labels = batch["labels"][:, 1:]
            total += torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100,
                                                       reduction="sum").item()
            count += int((labels != -100).sum())
    model.train(was_training)
    return total / count


def perplexity(model, tokenizer, texts: list[str], max_length: int = 256) -> float:
    """exp(mean token negative log-likelihood) over texts, each cut at max_length tokens. Texts of fewer than
    2 tokens have no next token to predict and are skipped; if all are, the perplexity is refused."""
    texts = check_strings("texts", texts, error=DataError)
    max_length = check_int("max_length", max_length, 2)
    check_model(model)
    check_tokenizer(tokenizer)
    encoded = [tokenizer(t, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"] for t in texts]
    encoded = [ids for ids in encoded if ids.shape[1] >= 2]
    if not encoded:
        raise DataError(f"texts: all {len(texts)} texts are too short to score (under 2 tokens each): perplexity "
                        "needs texts of at least 2 tokens", field="texts")
    device = next(model.parameters()).device
    nll, n = 0.0, 0
    model.eval()
    with torch.no_grad():
        for ids in encoded:
            ids = ids.to(device)
            loss = model(input_ids=ids, labels=ids).loss
            nll += loss.item() * (ids.shape[1] - 1)
            n += ids.shape[1] - 1
    return math.exp(nll / n)
