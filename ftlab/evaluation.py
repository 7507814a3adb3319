"""Metrics through `evaluate`, from local metric modules (ftlab/metrics/*) so they work offline,
plus batched greedy generation for before/after comparisons."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent / "metrics"
_cache: dict = {}


def load_metric(name: str):
    """evaluate.load on ftlab's local module folder (the hub's "rouge" needs network)."""
    import evaluate
    folder = METRICS_DIR / name
    if not (folder / f"{name}.py").is_file():
        raise ValueError(f"metric={name!r} is unknown: one of {sorted(p.name for p in METRICS_DIR.iterdir() if p.is_dir())}")
    if name not in _cache:
        _cache[name] = evaluate.load(str(folder))
    return _cache[name]


def rouge(predictions: list[str], references: list[str], per_example: bool = False) -> dict:
    """ROUGE-1/2/L/Lsum F-measures (mean over examples, or the per-example lists)."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"predictions ({len(predictions)}) and references ({len(references)}) must be equal, non-zero lengths")
    return load_metric("rouge").compute(predictions=predictions, references=references, use_aggregator=not per_example)


def exact_match(predictions: list[str], references: list[str]) -> float:
    """Share of predictions equal to the reference after stripping whitespace and case."""
    norm = lambda s: " ".join(s.lower().split())  # noqa: E731
    return sum(norm(p) == norm(r) for p, r in zip(predictions, references)) / max(len(references), 1)


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 32, batch_size: int = 8) -> list[str]:
    """Greedy completions of already-templated prompts, batched with left padding."""
    import torch
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only: pad on the left so every row continues from its end
    was_training = model.training
    model.eval()
    out = []
    device = next(model.parameters()).device
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(prompts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.no_grad(), warnings.catch_warnings():
                # peft says it ignores position ids for soft prompts on every call: true, and not the user's doing
                warnings.filterwarnings("ignore", message="Position ids are not supported")
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            out += [s.strip() for s in tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


def completion_loss(model, tokenizer, records: list[dict], batch_size: int = 8) -> float:
    """Mean cross-entropy per completion token of conversational prompt/completion records: the held-out loss
    on the answers alone, comparable between models however they were trained (the trainer's eval_loss
    covers whatever the run's loss covered, prompt tokens included when completion_only_loss=False)."""
    import torch

    from ftlab.data import loss_batches
    device = next(model.parameters()).device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in loss_batches(tokenizer, records, batch_size):
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
            labels = batch["labels"][:, 1:]
            total += torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100,
                                                       reduction="sum").item()
            count += int((labels != -100).sum())
    model.train(was_training)
    return total / max(count, 1)


def perplexity(model, tokenizer, texts: list[str], max_length: int = 256) -> float:
    """exp(mean token negative log-likelihood) over texts, each cut at max_length tokens."""
    import torch
    device = next(model.parameters()).device
    nll, n = 0.0, 0
    model.eval()
    with torch.no_grad():
        for t in texts:
            ids = tokenizer(t, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"].to(device)
            if ids.shape[1] < 2:
                continue
            loss = model(input_ids=ids, labels=ids).loss
            nll += loss.item() * (ids.shape[1] - 1)
            n += ids.shape[1] - 1
    return math.exp(nll / max(n, 1))
