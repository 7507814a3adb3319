"""One training run, measured, and the training function behind a notebook's Run button.

run_and_measure: a freshly loaded base, its memory watched from before the load, the method applied and trained
(ftlab.train.finetune), then the numbers a comparison row shows: trainable parameters, the calculator's estimate
beside the memory measured, seconds a step, training and validation loss and token accuracy, the optimizer
state's bytes a parameter and, given test records, ROUGE-L of greedy answers. Labs that sweep a setting (a rank,
the targets, the number of virtual tokens) call it once per value; ftlab.compare calls it once per method.

panel_trainer: the train(cfg, callback) function ftlab.widgets.RunControls calls when Run is pressed.
"""
from __future__ import annotations

import ctypes
import gc
import time
from dataclasses import replace
from typing import Callable

import torch

from ftlab.config import TrainConfig
from ftlab.data import sft_data
from ftlab.errors import ConfigError, check_bool, check_int, check_listeners, check_text
from ftlab.evaluation import generate, rouge
from ftlab.measure import MemoryMonitor
from ftlab.memory import estimate_memory
from ftlab.method_table import METHODS
from ftlab.methods import trainable_parameters
from ftlab.models import BaseModels, load_for
from ftlab.prompts import chat_prompts
from ftlab.records import check_sft_records, check_task_records
from ftlab.report import ReportCallback
from ftlab.train import finetune


def check_config(cfg, field: str = "cfg") -> TrainConfig:
    """A TrainConfig: a dict or a name here would fail deep inside dataclasses.replace or the trainer."""
    if not isinstance(cfg, TrainConfig):
        raise ConfigError(field, cfg, "a TrainConfig (ftlab.config.TrainConfig(model=..., ...))")
    return cfg


def optimizer_state_bytes(optimizer) -> int:
    """Bytes the optimizer keeps between steps: every tensor of its per-parameter state (AdamW's two moments,
    the 8-bit optimizers' quantised moments and their block scales, the step counter)."""
    states = getattr(optimizer, "state", None) or {}
    return sum(t.numel() * t.element_size() for s in states.values() for t in s.values() if torch.is_tensor(t))


class OptimizerStateReport(ReportCallback):
    """finetune's ReportCallback that also weighs the optimizer state when training ends: the trainer, which
    holds the optimizer, stays inside finetune, and the end of training is the last moment it is reachable.
    `optimizer_bytes` stays None when training ended early by an exception (no on_train_end)."""

    def __init__(self, listeners: list | None = None):
        super().__init__(listeners)
        self.optimizer_bytes: int | None = None

    def on_train_end(self, args, state, control, optimizer=None, **kw):
        self.optimizer_bytes = optimizer_state_bytes(optimizer)
        return super().on_train_end(args, state, control, optimizer=optimizer, **kw)


def _check_run(c, train_records, val_records, test_records, listeners, label, options: dict) -> dict:
    """Everything a run reads, checked before the base loads; the options in their plain types."""
    check_config(c, "c")
    check_sft_records(train_records, "train_records")
    if val_records:
        check_sft_records(val_records, "val_records")
    if test_records:  # generated from their source, scored against their target
        check_task_records(test_records, "test_records")
    check_listeners(listeners)
    if label is not None:
        check_text("label", label)
    ints = {"max_new_tokens", "generate_batch_size"}
    return {k: check_int(k, v, 1) if k in ints else check_bool(k, v) for k, v in options.items()}


def _answers(model, tokenizer, records, o: dict) -> list[str]:
    return generate(model, tokenizer, chat_prompts(tokenizer, records), max_new_tokens=o["max_new_tokens"],
                    batch_size=o["generate_batch_size"])


def _merges_for_generation(c) -> bool:
    """LoRA-like updates that peft folds into a 16/32-bit base (merge_adapter: LoRA, DoRA, LoHa): generating then
    does not redo B·A (and DoRA's column norms) at every new token. A 4-bit base cannot take the update exactly."""
    m = METHODS[c.method]
    return m.low_rank and m.peft_type is not None and c.effective_bits >= 16


def run_and_measure(c, train_records, val_records=None, test_records=None, *, listeners=None,
                    label: str | None = None, max_new_tokens: int = 24, eval_before: bool = True,
                    score_before: bool = False, details: bool = False, generate_batch_size: int = 8) -> dict:
    """Train config `c` on a freshly loaded base and measure the run: one row of numbers (a dict).

    Row: bits, trainable (count and % of the model), estimated_gib and estimated_peak_allocated_gib (the
    calculator, for c.gpu), measured_gib (peak allocated on CUDA, else the process's peak resident memory; see
    measured_kind), seconds_per_step, train_loss_first/last (mean of the first and last quarter of steps),
    val_loss and val_accuracy before and after, optimizer_bytes_per_param, saved_to, seconds by phase, and with
    test_records rougeL and example (the first answer). Listeners receive the training events with "method":
    label added. eval_before=False skips the validation pass before training (in a sweep the same base scores
    the same every time). score_before=True also scores the base's answers before the method is applied
    (rougeL_before). details=True adds train (the TrainResult's summary), memory (the monitor's report by
    phase), model_info, total_parameters and every answer (predictions, predictions_before)."""
    o = _check_run(c, train_records, val_records, test_records, listeners, label,
                   {"max_new_tokens": max_new_tokens, "generate_batch_size": generate_batch_size,
                    "eval_before": eval_before, "score_before": score_before, "details": details})
    label = label or c.method
    t0 = time.perf_counter()
    release_freed_memory()  # on a CPU: this run's RSS starts from what is alive, not from what earlier runs freed
    monitor = MemoryMonitor().start()
    model, tok = load_for(c)
    monitor.mark("after_load")
    info = dict(getattr(model, "ftlab_info", None) or {})
    t_loaded = time.perf_counter()
    before = _answers(model, tok, test_records, o) if o["score_before"] and test_records else None
    generating_before = time.perf_counter() - t_loaded
    tagged = [lambda e, f=f: f({**e, "method": label}) for f in (listeners or [])]
    callback = OptimizerStateReport([monitor, *tagged])
    result, model = finetune(c, train_records, val_records, model=model, tokenizer=tok, callback=callback,
                             eval_before=o["eval_before"])
    t_trained = time.perf_counter()
    monitor.stop()
    report = monitor.report()
    n_train, n_total = trainable_parameters(model)
    predictions = None
    if test_records:
        if _merges_for_generation(c):
            model.merge_adapter()  # the same function as merge_and_unload, checked in lab 04
        predictions = _answers(model, tok, test_records, o)
    t_scored = time.perf_counter()
    longest = longest_tokens(tok, train_records, c.seq_len)
    row = _row(c, result, report, n_train, n_total, callback.optimizer_bytes, longest)
    if test_records:
        refs = [r["target"] for r in test_records]
        row.update(rougeL=rouge(predictions, refs)["rougeL"], example=predictions[0] if predictions else "")
        if before is not None:
            row["rougeL_before"] = rouge(before, refs)["rougeL"]
    row["seconds"] = {"total": t_scored - t0, "training": result.seconds,
                      "load_evaluate_save": t_trained - t0 - result.seconds - generating_before,
                      "generate": t_scored - t_trained + generating_before}
    if before is not None:
        row["seconds"]["generate_before"] = generating_before
    if o["details"]:
        row.update(train=result.summary(), memory=report, model_info=info, total_parameters=n_total,
                   predictions=predictions or [], predictions_before=before or [])
    del model
    release_freed_memory()
    return row


def release_freed_memory() -> None:
    """Collect garbage and hand freed memory back: CUDA's cached blocks, and on a CPU with glibc the free pages
    its heap keeps for reuse (malloc_trim). Without it a run measured after another starts from the earlier run's
    leftovers: in lab 07 on a CPU, ~2 GiB that full fine-tuning freed stayed resident through every later method,
    and each of those measured only what it added beyond that."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to hand back this way
        pass


def longest_tokens(tokenizer, records, seq_len: int) -> int:
    """Tokens of the longest training example as the trainer sees it (chat template applied, cut at seq_len):
    TRL pads each batch to its longest, so the step with the longest example is the largest."""
    lengths = [len(tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=True, return_dict=True)
                   ["input_ids"]) for r in records]
    return min(max(lengths, default=seq_len), seq_len)


def _row(c, result, report: dict, n_train: int, n_total: int, optimizer_bytes: int | None, longest: int) -> dict:
    cuda = report["device"] == "cuda"
    # the same kind of quantity on both sides: GPU memory on CUDA; on a CPU the process's peak RSS (its run part,
    # estimated_peak_allocated_gib there, beside measured_increase_gib) at the longest example's length, which
    # sets the largest step (short examples fill far less than seq_len)
    est = estimate_memory(c) if cuda else estimate_memory(replace(c, seq_len=longest), device="cpu")
    k = max(1, len(result.losses) // 4)
    memory = {"estimated_gib": est.total_gib, "estimated_peak_allocated_gib": est.peak_allocated_gib,
              "measured_gib": report["peak_allocated_gib"] if cuda else report["peak_rss_gib"],
              "measured_kind": "peak allocated (CUDA)" if cuda else "peak RSS of the process (CPU)"}
    if not cuda:  # what the run added over the RSS at its start (earlier runs' freed memory may be reused)
        memory["measured_increase_gib"] = report["peak_rss_over_baseline_gib"]
    return {"bits": c.effective_bits, "trainable": n_train, "trainable_pct": 100 * n_train / n_total, **memory,
            "seconds_per_step": result.seconds / max(result.steps, 1),
            "train_loss_first": sum(loss for _, loss in result.losses[:k]) / k,
            "train_loss_last": sum(loss for _, loss in result.losses[-k:]) / k,
            "val_loss_before": result.eval_loss_before, "val_loss_after": result.eval_loss_after,
            "val_accuracy_before": result.eval_accuracy_before, "val_accuracy_after": result.eval_accuracy_after,
            "optimizer_bytes_per_param": optimizer_bytes / n_train if optimizer_bytes is not None and n_train
            else float("nan"), "saved_to": result.saved_to}


def panel_trainer(bases: BaseModels, data_for: Callable = sft_data) -> Callable:
    """The train(cfg, callback) that ftlab.widgets.RunControls calls when Run is pressed, with the panel's config
    at that moment: a base from `bases` (the model already in memory serves the first run of its set-up, any other
    gets a fresh load), the (train_records, val_records) that data_for(cfg, tokenizer) gives (ftlab.data.sft_data
    by default), then ftlab.train.finetune with the Run's callback. It returns finetune's (TrainResult, model)."""
    if not isinstance(bases, BaseModels):
        raise ConfigError("bases", bases if bases is None else f"a {type(bases).__name__}",
                          "an ftlab.models.BaseModels (BaseModels(model, tokenizer, cfg.model, cfg.effective_bits))")
    if not callable(data_for):
        raise ConfigError("data_for", data_for, "a function (cfg, tokenizer) -> (train_records, val_records), "
                          "e.g. ftlab.data.sft_data")

    def train(cfg, callback):
        model, tok = bases.get(cfg)
        data = data_for(cfg, tok)
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise ConfigError("data_for", getattr(data_for, "__name__", data_for),
                              f"a function returning (train_records, val_records); it returned {type(data).__name__}"
                              + (f" of {len(data)}" if isinstance(data, (tuple, list)) else ""))
        return finetune(cfg, data[0], data[1], model=model, tokenizer=tok, callback=callback)

    return train
