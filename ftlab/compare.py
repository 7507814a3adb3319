"""Every method on the same model, data and number of steps: one row of numbers per method.

Each method gets a freshly loaded base (methods adapt their base in place), its own typical learning
rate (`Method.lr`: one rate for all would favour some methods by accident), and the same training,
validation and test examples. A method that cannot run on this model (BitFit without biases) or this
machine gets a row that says why instead of numbers.
"""
from __future__ import annotations

import gc
import time
from dataclasses import replace

from ftlab.memory import estimate_memory

# Variants of a table row that the comparison shows separately: name -> (method, base bits)
VARIANTS = {"lora_8bit": ("lora", 8)}


def variant(name: str, cfg):
    """The TrainConfig for one comparison entry (a METHODS name or a VARIANTS name)."""
    from ftlab.config import ConfigError
    from ftlab.methods import METHODS
    _check_cfg(cfg)
    if not isinstance(name, str) or (name not in METHODS and name not in VARIANTS):  # a list is not a name
        raise ConfigError("methods", name, f"names from {list(METHODS) + list(VARIANTS)}")
    method, bits = VARIANTS.get(name, (name, None))
    bits = bits or (4 if method == "qlora" else cfg.bits if method not in ("full", "bitfit", "top_k") else max(cfg.bits, 16))
    from ftlab.results import inside
    return replace(cfg, method=method, bits=bits, learning_rate=METHODS[method].lr,
                   output_dir=str(inside(cfg.output_dir, name)))


def _check_cfg(cfg, field: str = "cfg"):
    """A TrainConfig: a dict or a name here would fail deep inside dataclasses.replace or the trainer."""
    from ftlab.config import ConfigError, TrainConfig
    if not isinstance(cfg, TrainConfig):
        raise ConfigError(field, cfg, "a TrainConfig (ftlab.config.TrainConfig(model=..., ...))")


def compare_methods(cfg, names: list[str], train_records, val_records, test_records, *, listeners=None,
                    max_new_tokens: int = 24) -> list[dict]:
    """Train each named method with cfg's model, steps, batch and sequence length; measure and score it.

    Listeners receive the training events of each run with "method" added. Rows: method, family,
    trainable (count and %), estimated GPU memory (cfg.gpu), measured memory, seconds a step, train and
    validation loss, validation token accuracy (TRL's, from the same evaluation pass: the task metric that
    costs nothing extra), ROUGE-L of greedy answers to `test_records` (keep them few on a CPU: generation
    is the slowest part), or "skipped" with the reason. Methods that start as their base share the validation
    pass before training of the first such method with the same base precision ("val_before_from" names it).
    """
    from ftlab.errors import ConfigError, check_int, check_strings
    from ftlab.methods import METHODS, check_setup

    _check_cfg(cfg)
    # every name is checked before the first run trains: a typo in the last would cost all the runs before it
    names = check_strings("names", names)
    for name in names:
        variant(name, cfg)
    twice = [n for n in dict.fromkeys(names) if names.count(n) > 1]
    if twice:  # two runs of one name would write to one output folder
        raise ConfigError("names", names, f"distinct names ({twice[0]!r} is listed twice)")
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, 1)
    rows = []
    # the validation pass before training, per base precision, of the methods that start as their base
    # (Method.starts_as_base: the same logits before any step, checked in tests/test_methods.py): run once
    base_before = {}
    for name in names:
        c = variant(name, cfg)
        m = METHODS[c.method]
        row = {"method": name, "family": m.family, "summary": m.summary, "learning_rate": c.learning_rate}
        try:
            check_setup(c)
        except ValueError as e:  # e.g. BitFit on a model without biases: say why, keep going
            rows.append({**row, "skipped": str(e)})
            continue
        key = c.effective_bits if m.starts_as_base else None
        shared = base_before.get(key) if key is not None else None
        row.update(measure_run(c, train_records, val_records, test_records, listeners=listeners, label=name,
                               max_new_tokens=max_new_tokens, eval_before=shared is None))
        if shared:
            row.update(val_loss_before=shared[0], val_accuracy_before=shared[1], val_before_from=shared[2])
        elif key is not None:
            base_before[key] = (row["val_loss_before"], row["val_accuracy_before"], name)
        rows.append(row)
    return rows


def measure_run(c, train_records, val_records, test_records=None, *, listeners=None, label: str | None = None,
                max_new_tokens: int = 24, eval_before: bool = True) -> dict:
    """One training run of config `c` on a freshly loaded base, measured: the numbers of a comparison row
    (trainable count and %, estimated and measured memory, seconds a step, train and validation loss and
    token accuracy, and ROUGE-L of greedy answers to `test_records` when given). Listeners receive the
    training events with "method": label added. Labs that sweep one setting (a rank, the targets, the number
    of virtual tokens) call this once per value; eval_before=False skips the validation pass before training
    (the same base scores the same in every run of a sweep: once is enough)."""
    import torch

    from ftlab.data import chat_prompts
    from ftlab.records import check_sft_records, check_task_records
    from ftlab.errors import check_bool, check_int, check_listeners, check_text
    from ftlab.evaluation import generate, rouge
    from ftlab.measure import MemoryMonitor
    from ftlab.methods import trainable_parameters
    from ftlab.models import load_for
    from ftlab.train import finetune

    # everything a run reads, checked before the base loads
    _check_cfg(c, "c")
    check_sft_records(train_records, "train_records")
    if val_records:
        check_sft_records(val_records, "val_records")
    if test_records:  # generated from their source, scored against their target
        check_task_records(test_records, "test_records")
    check_listeners(listeners)
    if label is not None:
        check_text("label", label)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, 1)
    eval_before = check_bool("eval_before", eval_before)

    label = label or c.method
    t0 = time.perf_counter()
    monitor = MemoryMonitor().start()
    model, tok = load_for(c)
    monitor.mark("after_load")
    tagged = [lambda e, f=f: f({**e, "method": label}) for f in (listeners or [])]
    result, model = finetune(c, train_records, val_records, model=model, tokenizer=tok, listeners=[monitor, *tagged],
                             eval_before=eval_before)
    t_trained = time.perf_counter()
    report = monitor.report()
    monitor.stop()
    n_train, n_total = trainable_parameters(model)
    row = {}
    if test_records:
        if c.method in ("lora", "dora") and c.effective_bits >= 16:
            # fold the trained update into the weights (peft's merge_adapter: the same function, as lab 04
            # checks) so that generating does not redo B·A, and DoRA's column norms, at every new token
            model.merge_adapter()
        predictions = generate(model, tok, chat_prompts(tok, test_records), max_new_tokens=max_new_tokens)
        row = {"rougeL": rouge(predictions, [r["target"] for r in test_records])["rougeL"],
               "example": predictions[0] if predictions else ""}
    t_scored = time.perf_counter()
    est = estimate_memory(c)
    k = max(1, len(result.losses) // 4)
    cuda = report["device"] == "cuda"
    row = {"bits": c.effective_bits, "trainable": n_train, "trainable_pct": 100 * n_train / n_total,
           "estimated_gib": est.total_gib, "estimated_peak_allocated_gib": est.peak_allocated_gib,
           "measured_gib": report["peak_allocated_gib"] if cuda else report["peak_rss_gib"],
           "measured_kind": "peak allocated (CUDA)" if cuda else "peak RSS of the process (CPU)",
           "seconds_per_step": result.seconds / max(result.steps, 1),
           "train_loss_first": sum(l for _, l in result.losses[:k]) / k,
           "train_loss_last": sum(l for _, l in result.losses[-k:]) / k,
           "val_loss_before": result.eval_loss_before, "val_loss_after": result.eval_loss_after,
           "val_accuracy_before": result.eval_accuracy_before, "val_accuracy_after": result.eval_accuracy_after,
           **row, "saved_to": result.saved_to,
           "seconds": {"total": t_scored - t0, "training": result.seconds,
                       "load_evaluate_save": t_trained - t0 - result.seconds, "generate": t_scored - t_trained}}
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return row
