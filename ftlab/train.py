"""Training through TRL's trainers, observed by one callback (ftlab.report.ReportCallback).

ftlab does not write a trainer: TRL's SFTTrainer computes the loss (completion-only on
prompt/completion data, with a fused LM head that never holds the full logits), steps the optimizer
and schedules the learning rate. Here: a supervised run with its guards (train_sft) and `finetune`, everything
a Run button does. The TRL arguments every trainer shares (trainer_args), the trainer set-up (build_trainer) and
the guard for the other trainers (train_guarded) are ftlab.trainer's; the notebook's background runner is
ftlab.runner.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import time
import warnings

import torch

from ftlab import models
from ftlab.checkpoints import CHECKPOINT, checkpoint_for, save_checkpoint
from ftlab.config import TrainConfig
from ftlab.distributed import rank, save_on_main, shards_weights
from ftlab.errors import CheckpointError, ConfigError, DataError, FtlabError, check_int, check_listeners, check_text
from ftlab.guard import GoodWeights, OutOfMemory, TrainingFailed, oom_message
from ftlab.layout import Layout
from ftlab.memory import estimate_memory
from ftlab.methods import apply_method, check_setup, trainable_parameters
from ftlab.records import check_sft_records
from ftlab.report import ReportCallback, TrainResult
from ftlab.results import RUN_RECORD, check_output_dir, run_record, write_results
from ftlab.runner import TRAINING_THREAD, Run
from ftlab.saved import check_applied
from ftlab.trainer import OPTIM, build_trainer, release, stop_if_non_finite, train_guarded, trainer_args

# Run, TRAINING_THREAD (ftlab.runner's), OPTIM, trainer_args and train_guarded (ftlab.trainer's) are re-exported:
# ftlab.train.Run and the rest still work where they were
__all__ = ["OPTIM", "Run", "TRAINING_THREAD", "check_run_arguments", "finetune", "sft_config", "train_guarded",
           "train_sft", "trainer_args"]


def sft_config(cfg, *, eval_steps: int | None = None, **overrides):
    """SFTConfig from a TrainConfig (see trainer_args), without packing."""
    # lazy: trl takes ~0.7 s more to import (on top of torch and transformers); only a run needs it
    from trl import SFTConfig
    return trainer_args(SFTConfig, cfg, eval_steps=eval_steps, **{"packing": False, **overrides})


def train_sft(model, tokenizer, train_records: list[dict], cfg, *, eval_records: list[dict] | None = None,
              listeners: list | None = None, eval_steps: int | None = None, callback: ReportCallback | None = None,
              eval_before: bool = True, extra_callbacks: list | None = None, resume_from: str | None = None,
              **sft_overrides) -> tuple[TrainResult, object]:
    """Fine-tune `model` (already prepared by ftlab.methods.apply_method) on prompt/completion records.

    With eval_records, the validation loss is computed before training (step 0) and after it, and
    every `eval_steps` steps if given. Returns (TrainResult, trainer). A stop request (or KeyboardInterrupt)
    ends the run after the current step; the model keeps the weights of the last completed step, and a
    checkpoint with the optimizer state goes to output_dir/checkpoint for `resume_from`. Out of memory and a
    non-finite loss raise OutOfMemory / NonFiniteLoss (ftlab.guard) with the last good weights in the model.
    """
    # lazy: trl takes ~0.7 s more to import (on top of torch and transformers); only a run needs it
    from trl import SFTTrainer
    check_run_arguments(cfg, train_records, eval_records, listeners=listeners, eval_steps=eval_steps,
                        sft_overrides=sft_overrides)
    before = bool(eval_records and eval_before and not resume_from)  # the held-out loss at step 0: "did it learn"
    # Under DeepSpeed an evaluate() before train() leaves an inference engine in the trainer, and train() then
    # builds no training engine (its first backward fails on None): the trainer's own eval_on_start evaluates at
    # step 0 inside train(), once the engine exists. Elsewhere the evaluation runs before, as it always did.
    in_loop = {"eval_on_start": True} if before and sft_overrides.get("deepspeed") else {}
    trainer, cb = build_trainer(SFTTrainer, sft_config(cfg, eval_steps=eval_steps, **{**in_loop, **sft_overrides}),
                                model=model, tokenizer=tokenizer, train_records=train_records,
                                eval_records=eval_records, listeners=listeners, callback=callback,
                                extra_callbacks=extra_callbacks)
    _account_for_truncation(trainer, cb.result, len(train_records), len(eval_records or []), cfg.seq_len)
    # split weights (ZeRO-3, FSDP): no copy to put back, a non-finite loss still stops the run
    guard = GoodWeights(max_params=-1) if shards_weights(sft_overrides) else GoodWeights()
    trainer.add_callback(guard)
    if before and not in_loop:
        trainer.evaluate()  # logged at step 0 through the callback
    if resume_from:  # the loss curve goes on from where it stopped
        cb.load_history(resume_from)
    try:
        trainer.train(resume_from_checkpoint=resume_from)
    except KeyboardInterrupt:  # Kernel > Interrupt in a foreground run: a Stop, not a lost run
        cb.result.stopped, cb.result.stop_reason = True, "interrupted (KeyboardInterrupt)"
        cb.finish(trainer.state)
    except Exception as e:
        if not isinstance(e, torch.OutOfMemoryError) and "out of memory" not in str(e).lower():
            raise
        # the weights are those of the last completed step: the failed step never reached optimizer.step()
        model.zero_grad(set_to_none=True)
        cb.result.stopped, cb.result.stop_reason = True, "out of memory"
        cb.finish(trainer.state)
        release(trainer)
        raise OutOfMemory(oom_message(cfg, e), cb.result) from None
    model.eval()
    stop_if_non_finite(trainer, guard, cfg, cb.result, count_good_steps=True)
    if cb.result.stopped:  # Stop or interrupt: keep what is needed to resume (optimizer state included)
        cb.result.checkpoint = save_checkpoint(trainer, os.path.join(cfg.output_dir, CHECKPOINT), cfg)
    if eval_records:
        trainer.evaluate()  # logs eval_loss at the last step through the callback
    return cb.result, trainer


def check_run_arguments(cfg, train_records, eval_records=None, *, listeners=None, eval_steps=None,
                        sft_overrides: dict | None = None, layout=None) -> None:
    """What a training run is handed, checked before any weights load or the trainer tokenises: a valid
    TrainConfig (validated again: a field changed after creation is caught here), the records' shape, the
    listeners, eval_steps, the layout, and SFTConfig overrides that exist (a misspelt one is named with the
    nearest)."""
    if not isinstance(cfg, TrainConfig):
        raise ConfigError("cfg", cfg, "a TrainConfig (ftlab.config.TrainConfig(model=..., method=..., ...))")
    cfg.validate()
    check_sft_records(train_records, "train_records")
    if eval_records is not None and not (isinstance(eval_records, list) and not eval_records):
        check_sft_records(eval_records, "eval_records")
    check_listeners(listeners)
    if eval_steps is not None:
        check_int("eval_steps", eval_steps, 1)
    if layout is not None and not isinstance(layout, Layout):
        raise ConfigError("layout", layout, "None or a ftlab.layout.Layout (Layout.build(num_gpus=..., strategy=...))")
    if sft_overrides:
        # lazy: trl takes ~0.7 s more to import (on top of torch and transformers); only a run needs it
        from trl import SFTConfig
        known = [f.name for f in dataclasses.fields(SFTConfig)]
        for key in sft_overrides:
            if key not in known:
                near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                raise ConfigError(key, sft_overrides[key], (f"did you mean {near[0]!r}? " if near else "") +
                                  "it is not an SFTConfig field (extra keyword arguments go to TRL's SFTConfig)")


def _account_for_truncation(trainer, result: TrainResult, n_train: int, n_eval: int, seq_len: int) -> None:
    """Count what TRL's preparation did to the data, say it in one line, and refuse a run left with nothing.

    SFTTrainer cuts every tokenised example at max_length (= seq_len) and then drops the examples left with no
    loss token (a prompt that alone fills seq_len). It does so silently; a user's own data with long prompts
    would train on a fraction of itself and report success. Kept examples that reached seq_len lost the end of
    their completion (or were exactly seq_len long: TRL keeps no record of the length before the cut)."""
    kept = trainer.train_dataset
    result.examples = n_train
    result.dropped_examples = n_train - len(kept)
    result.truncated_examples = sum(len(ids) >= seq_len for ids in kept["input_ids"])
    if trainer.eval_dataset is not None:
        result.eval_dropped_examples = n_eval - len(trainer.eval_dataset)
    fix = ("raise seq_len, or shorten the prompts (ftlab.data.fit_to_length cuts the source and keeps the "
           "completion whole)")
    if len(kept) == 0:
        raise DataError(f"train_records: none of the {n_train} examples keeps a completion token within "
                        f"seq_len={seq_len} (each prompt alone fills it), so there is nothing to train on: {fix}",
                        field="seq_len")
    if trainer.eval_dataset is not None and len(trainer.eval_dataset) == 0:
        raise DataError(f"eval_records: none of the {n_eval} held-out examples keeps a completion token within "
                        f"seq_len={seq_len}: {fix}", field="seq_len")
    if result.dropped_examples or result.truncated_examples or result.eval_dropped_examples:
        print(f"ftlab: of {n_train} training examples, {result.dropped_examples} were left out (the prompt alone "
              f"fills seq_len={seq_len}) and {result.truncated_examples} were cut at seq_len"
              + (f"; {result.eval_dropped_examples} of {n_eval} held-out examples were left out"
                 if result.eval_dropped_examples else "") + f". To keep them whole: {fix}.", flush=True)


def finetune(cfg, train_records: list[dict], eval_records: list[dict] | None = None, *, model=None, tokenizer=None,
             listeners: list | None = None, callback: ReportCallback | None = None, eval_steps: int | None = None,
             save: bool = True, eval_before: bool = True, apply: bool = True, resume: bool = False,
             data_name: str | None = None, layout=None, **sft_overrides) -> tuple[TrainResult, object]:
    """Everything a Run button does: load the base (unless given), apply cfg.method, train with SFTTrainer,
    and save what was trained (also after a Stop: the last completed step) to `output_dir/adapter`.

    apply=False: `model` was already prepared with ftlab.methods.apply_method. resume=True continues a
    stopped run from output_dir/checkpoint: step count, optimizer state and loss curve go on. Other keyword
    arguments go to the SFTConfig (e.g. completion_only_loss=False). Returns (TrainResult, model).
    Once training starts, the run leaves `output_dir/run.json` (ftlab.results.run_record), also after a Stop
    or a failure; data_name says what the records are there (default cfg.dataset: an embedded name or a file).
    layout: the Layout the processes run under (write_launch's train.py gives it): run.json's estimate is per GPU.
    """
    check_run_arguments(cfg, train_records, eval_records, listeners=listeners, eval_steps=eval_steps,
                        sft_overrides=sft_overrides, layout=layout)
    data_name = cfg.dataset if data_name is None else check_text("data_name", data_name)
    if model is not None:
        if isinstance(model, tuple):
            raise ConfigError("model", f"a tuple of {len(model)}", "the model alone: model, tokenizer = "
                              "load_model(...), then finetune(..., model=model, tokenizer=tokenizer)")
        if not isinstance(model, torch.nn.Module):
            raise ConfigError("model", type(model).__name__, "a transformers model (load_model returns one)")
        if tokenizer is None:
            raise ConfigError("tokenizer", None, "the model's tokenizer whenever model= is given "
                              "(model, tokenizer = load_model(...))")
    check_setup(cfg, models.resolve_arch(model.config) if model is not None else None)
    check_output_dir(cfg.output_dir)
    resume_from = checkpoint_for(cfg) if resume else None  # a checkpoint of another set-up is refused here
    if resume and resume_from is None:
        raise CheckpointError(f"resume=True: no checkpoint in output_dir={cfg.output_dir!r} (a Stop writes one to "
                              f"{os.path.join(cfg.output_dir, CHECKPOINT)!r})", field="resume")
    if model is None:
        model, tokenizer = models.load_for(cfg)  # looked up at the call: a test (or a user) may swap the loader
    if apply:
        torch.manual_seed(cfg.seed)  # the method's new weights (LoRA's A, a random soft prompt) are the same every run
        model = apply_method(model, cfg)
    else:  # prepared by the caller: it must be what cfg.method makes, or the save after training would refuse it
        check_applied(model, cfg)
    adapter_dir = os.path.join(cfg.output_dir, "adapter")
    callback, peak, error, t0 = callback or ReportCallback(), _PeakMemory(), None, time.perf_counter()
    try:
        result, _ = train_sft(model, tokenizer, train_records, cfg, eval_records=eval_records,
                              listeners=[*(listeners or []), peak], callback=callback, eval_steps=eval_steps,
                              eval_before=eval_before, resume_from=resume_from, **sft_overrides)
        if save:
            result.saved_to = save_on_main(model, adapter_dir, cfg)  # several processes: gathered, one writes
    except TrainingFailed as e:  # out of memory, non-finite loss: the last good weights are in the model
        error = e
        if save and e.result is not None:
            e.result.saved_to = save_on_main(model, adapter_dir, cfg)
            e.args = (f"{e.args[0]} The last good weights are saved in {e.result.saved_to}.",)
        raise
    except BaseException as e:  # a Stop during the evaluation, a bug in a listener, ...: recorded, then raised
        error = e
        raise
    finally:
        _write_record(cfg, callback.result, model, peak, error, time.perf_counter() - t0, layout, data=data_name,
                      train_examples=len(train_records), eval_examples=len(eval_records or []))
    return result, model


class _PeakMemory:
    """A listener that keeps the highest memory the step events carry (ftlab.report.memory_now): on CUDA the
    allocator's peak allocation (since the process started, or since a MemoryMonitor last reset it); on a CPU
    the process's resident memory at each logged step (a peak between two logs goes unseen)."""

    def __init__(self):
        self.gib, self.kind = None, None

    def __call__(self, event: dict) -> None:
        gib = event.get("peak_memory_gib", event.get("memory_gib")) if event.get("kind") == "step" else None
        if gib is not None and (self.gib is None or gib > self.gib):
            self.gib = gib
            self.kind = "GPU peak allocated" if "peak_memory_gib" in event else "CPU peak RSS"


def _write_record(cfg, result: TrainResult, model, peak: _PeakMemory, error, wall_s: float, layout=None,
                  **facts) -> None:
    """output_dir/run.json for this run (the first process alone writes it). A failure before the trainer's
    end has no closed result: its steps are the last logged and its seconds the wall time. Writing it never
    hides how the run ended: a record that cannot be written is a warning."""
    if rank() != 0:
        return
    if error is not None and not result.seconds:
        result.steps = result.steps or (result.losses[-1][0] if result.losses else 0)
        result.seconds = wall_s
    try:
        fields = ("num_gpus", "strategy", "num_machines", "offload_optimizer", "offload_params")
        shape = {} if layout is None else {k: getattr(layout, k) for k in fields}
        est = estimate_memory(cfg, **shape)
        under = f", per GPU under {layout}" if layout is not None else ""
        estimated = {"memory_estimated_gib": est.peak_allocated_gib,
                     "memory_estimated_kind": f"GPU peak allocated on {cfg.gpu} (estimate{under})"}
    except Exception as e:  # a hub id offline, a model the calculator cannot read: the run is recorded all the same
        estimated = {"memory_estimated_gib": None, "memory_estimated_kind": f"no estimate ({str(e)[:200]})"}
    measured = {"memory_measured_gib": peak.gib, "memory_measured_kind": peak.kind or "not measured (no step logged)"}
    try:
        trainable, total = trainable_parameters(model)
        record = run_record(cfg, result, trainable=trainable, total=total, memory={**estimated, **measured},
                            error=error, **facts)
        write_results(cfg.output_dir, record, RUN_RECORD)
    except (FtlabError, OSError) as e:
        warnings.warn(f"ftlab: {RUN_RECORD} could not be written to {cfg.output_dir!r}: {e}", stacklevel=3)
