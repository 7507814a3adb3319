"""Training through TRL's trainers, observed by one callback (ftlab.report.ReportCallback).

ftlab does not write a trainer: TRL's SFTTrainer computes the loss (completion-only on
prompt/completion data, with a fused LM head that never holds the full logits), steps the optimizer
and schedules the learning rate. Here: the TRL arguments every trainer shares (trainer_args), a supervised
run with its guards (train_sft), the guard for the other trainers (train_guarded), and `finetune`, everything
a Run button does. The notebook's background runner is ftlab.runner.
"""
from __future__ import annotations

import dataclasses
import os

from transformers import PrinterCallback

from ftlab.checkpoints import CHECKPOINT, checkpoint_for, save_checkpoint
from ftlab.errors import CheckpointError
from ftlab.guard import GoodWeights, NonFiniteLoss, OutOfMemory, TrainingFailed, free_memory, oom_message
from ftlab.report import ReportCallback, TrainResult
from ftlab.runner import TRAINING_THREAD, Run  # noqa: F401  (where they were: ftlab.train.Run still works)


# ftlab's optimizer names -> transformers' `optim` values
OPTIM = {"adamw": "adamw_torch", "adamw_8bit": "adamw_bnb_8bit", "paged_adamw_8bit": "paged_adamw_8bit", "sgd": "sgd"}


def trainer_args(config_class, cfg, *, eval_steps: int | None = None, **overrides):
    """A TRL config (SFTConfig, RewardConfig, DPOConfig, GRPOConfig, ...) from a TrainConfig: the precision
    that suits the device, logging every step, no saving, the run's steps, batch, rate, optimizer and seeds."""
    import torch
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    optim = OPTIM[cfg.optimizer]
    if optim == "adamw_torch" and cuda:
        optim = "adamw_torch_fused"
    kw = dict(output_dir=cfg.output_dir, max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
              per_device_eval_batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, max_length=cfg.seq_len,
              lr_scheduler_type="constant_with_warmup", warmup_steps=min(5, cfg.max_steps // 10),
              activation_checkpointing=cfg.gradient_checkpointing, optim=optim, seed=cfg.seed, data_seed=cfg.seed,
              bf16=bf16, fp16=cuda and not bf16, use_cpu=not cuda, logging_steps=1, save_strategy="no",
              report_to="none", disable_tqdm=True, include_num_input_tokens_seen="all",
              eval_strategy="steps" if eval_steps else "no", eval_steps=eval_steps, dataloader_num_workers=0,
              logging_nan_inf_filter=False)  # the default hides a nan loss from the logs: GoodWeights must see it
    if cfg.gradient_checkpointing:
        kw["activation_checkpointing_kwargs"] = {"use_reentrant": False}
    names = {f.name for f in dataclasses.fields(config_class)}  # GRPOConfig has no max_length, for one
    kw = {k: v for k, v in kw.items() if k in names}
    kw.update(overrides)
    return config_class(**kw)


def sft_config(cfg, *, eval_steps: int | None = None, **overrides):
    """SFTConfig from a TrainConfig (see trainer_args), without packing."""
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
    import datasets
    from datasets import Dataset
    from trl import SFTTrainer
    check_run_arguments(cfg, train_records, eval_records, listeners=listeners, eval_steps=eval_steps,
                        sft_overrides=sft_overrides)
    datasets.disable_progress_bars()  # in a notebook each map() would add a progress widget; our listeners report
    cb = callback or ReportCallback(listeners)
    if listeners and callback is not None:
        cb.listeners += list(listeners)
    trainer = SFTTrainer(model=model, args=sft_config(cfg, eval_steps=eval_steps, **sft_overrides),
                         train_dataset=Dataset.from_list(list(train_records)),
                         eval_dataset=Dataset.from_list(list(eval_records)) if eval_records else None,
                         processing_class=tokenizer, callbacks=[cb, *(extra_callbacks or [])])
    _account_for_truncation(trainer, cb.result, len(train_records), len(eval_records or []), cfg.seq_len)
    trainer.remove_callback(PrinterCallback)  # our listeners report; the default printer would repeat each log
    guard = GoodWeights()
    trainer.add_callback(guard)
    if eval_records and eval_before and not resume_from:  # the held-out loss at step 0: "did it learn"
        trainer.evaluate()  # logged at step 0 through the callback
    if resume_from:  # the loss curve goes on from where it stopped
        cb.load_history(resume_from)
    try:
        trainer.train(resume_from_checkpoint=resume_from)
    except KeyboardInterrupt:  # Kernel > Interrupt in a foreground run: a Stop, not a lost run
        cb.result.stopped, cb.result.stop_reason = True, "interrupted (KeyboardInterrupt)"
        cb.finish(trainer.state)
    except Exception as e:
        import torch
        if not isinstance(e, torch.OutOfMemoryError) and "out of memory" not in str(e).lower():
            raise
        # the weights are those of the last completed step: the failed step never reached optimizer.step()
        model.zero_grad(set_to_none=True)
        cb.result.stopped, cb.result.stop_reason = True, "out of memory"
        cb.finish(trainer.state)
        _release(trainer)
        raise OutOfMemory(oom_message(cfg, e), cb.result) from None
    model.eval()
    if guard.bad_step is not None:
        cb.result.stopped, cb.result.stop_reason = True, f"non-finite loss at step {guard.bad_step}"
        cb.result.steps = guard.good_step - 1 if guard.good_step is not None else guard.bad_step
        _release(trainer)
        raise NonFiniteLoss(guard.message(cfg), cb.result)
    if cb.result.stopped:  # Stop or interrupt: keep what is needed to resume (optimizer state included)
        cb.result.checkpoint = save_checkpoint(trainer, os.path.join(cfg.output_dir, CHECKPOINT), cfg)
    if eval_records:
        trainer.evaluate()  # logs eval_loss at the last step through the callback
    return cb.result, trainer


def check_run_arguments(cfg, train_records, eval_records=None, *, listeners=None, eval_steps=None,
                        sft_overrides: dict | None = None) -> None:
    """What a training run is handed, checked before any weights load or the trainer tokenises: a valid
    TrainConfig (validated again: a field changed after creation is caught here), the records' shape, the
    listeners, eval_steps, and SFTConfig overrides that exist (a misspelt one is named with the nearest)."""
    from ftlab.config import TrainConfig
    from ftlab.errors import ConfigError, check_int, check_listeners
    from ftlab.records import check_sft_records
    if not isinstance(cfg, TrainConfig):
        raise ConfigError("cfg", cfg, "a TrainConfig (ftlab.config.TrainConfig(model=..., method=..., ...))")
    cfg.validate()
    check_sft_records(train_records, "train_records")
    if eval_records is not None and not (isinstance(eval_records, list) and not eval_records):
        check_sft_records(eval_records, "eval_records")
    check_listeners(listeners)
    if eval_steps is not None:
        check_int("eval_steps", eval_steps, 1)
    if sft_overrides:
        from trl import SFTConfig  # heavy: imported when a run needs it anyway
        known = [f.name for f in dataclasses.fields(SFTConfig)]
        for key in sft_overrides:
            if key not in known:
                import difflib
                near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                raise ConfigError(key, sft_overrides[key], (f"did you mean {near[0]!r}? " if near else "") +
                                  "it is not an SFTConfig field (extra keyword arguments go to TRL's SFTConfig)")


def train_guarded(trainer, cfg, result: TrainResult | None = None) -> None:
    """trainer.train() for the other TRL trainers (reward, DPO, GRPO, GKD) with train_sft's non-finite guard:
    at a nan/inf loss the run stops, the weights that gave the last finite loss are put back, and
    NonFiniteLoss says so (without it a bad temperature or beta trains on to non-finite weights in silence)."""
    guard = GoodWeights()
    trainer.add_callback(guard)
    trainer.train()
    if guard.bad_step is not None:
        if result is not None:
            result.stopped, result.stop_reason = True, f"non-finite loss at step {guard.bad_step}"
        _release(trainer)
        raise NonFiniteLoss(guard.message(cfg), result)


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
        from ftlab.errors import DataError
        raise DataError(f"train_records: none of the {n_train} examples keeps a completion token within "
                        f"seq_len={seq_len} (each prompt alone fills it), so there is nothing to train on: {fix}",
                        field="seq_len")
    if trainer.eval_dataset is not None and len(trainer.eval_dataset) == 0:
        from ftlab.errors import DataError
        raise DataError(f"eval_records: none of the {n_eval} held-out examples keeps a completion token within "
                        f"seq_len={seq_len}: {fix}", field="seq_len")
    if result.dropped_examples or result.truncated_examples or result.eval_dropped_examples:
        print(f"ftlab: of {n_train} training examples, {result.dropped_examples} were left out (the prompt alone "
              f"fills seq_len={seq_len}) and {result.truncated_examples} were cut at seq_len"
              + (f"; {result.eval_dropped_examples} of {n_eval} held-out examples were left out"
                 if result.eval_dropped_examples else "") + f". To keep them whole: {fix}.", flush=True)


def _release(trainer) -> None:
    """Drop the optimizer state and cached blocks after a failure: the kernel goes on with memory back."""
    trainer.optimizer = None
    trainer.lr_scheduler = None
    free_memory()


def finetune(cfg, train_records: list[dict], eval_records: list[dict] | None = None, *, model=None, tokenizer=None,
             listeners: list | None = None, callback: ReportCallback | None = None, eval_steps: int | None = None,
             save: bool = True, eval_before: bool = True, apply: bool = True,
             resume: bool = False, **sft_overrides) -> tuple[TrainResult, object]:
    """Everything a Run button does: load the base (unless given), apply cfg.method, train with SFTTrainer,
    and save what was trained (also after a Stop: the last completed step) to `output_dir/adapter`.

    apply=False: `model` was already prepared with ftlab.methods.apply_method. resume=True continues a
    stopped run from output_dir/checkpoint: step count, optimizer state and loss curve go on. Other keyword
    arguments go to the SFTConfig (e.g. completion_only_loss=False). Returns (TrainResult, model).
    """
    import os

    from ftlab.errors import ConfigError
    from ftlab.methods import apply_method, check_setup
    from ftlab.trained import save_trained
    from ftlab.models import resolve_arch
    from ftlab.results import check_output_dir
    check_run_arguments(cfg, train_records, eval_records, listeners=listeners, eval_steps=eval_steps,
                        sft_overrides=sft_overrides)
    if model is not None:
        import torch
        if isinstance(model, tuple):
            raise ConfigError("model", f"a tuple of {len(model)}", "the model alone: model, tokenizer = "
                              "load_model(...), then finetune(..., model=model, tokenizer=tokenizer)")
        if not isinstance(model, torch.nn.Module):
            raise ConfigError("model", type(model).__name__, "a transformers model (load_model returns one)")
        if tokenizer is None:
            raise ConfigError("tokenizer", None, "the model's tokenizer whenever model= is given "
                              "(model, tokenizer = load_model(...))")
    check_setup(cfg, resolve_arch(model.config) if model is not None else None)
    check_output_dir(cfg.output_dir)
    resume_from = checkpoint_for(cfg) if resume else None  # a checkpoint of another set-up is refused here
    if resume and resume_from is None:
        raise CheckpointError(f"resume=True: no checkpoint in output_dir={cfg.output_dir!r} (a Stop writes one to "
                              f"{os.path.join(cfg.output_dir, CHECKPOINT)!r})", field="resume")
    if model is None:
        from ftlab.models import load_for
        model, tokenizer = load_for(cfg)
    if apply:
        import torch
        torch.manual_seed(cfg.seed)  # the method's new weights (LoRA's A, a random soft prompt) are the same every run
        model = apply_method(model, cfg)
    else:  # prepared by the caller: it must be what cfg.method makes, or the save after training would refuse it
        from ftlab.saved import check_applied
        check_applied(model, cfg)
    adapter_dir = os.path.join(cfg.output_dir, "adapter")
    try:
        result, _ = train_sft(model, tokenizer, train_records, cfg, eval_records=eval_records, listeners=listeners,
                              callback=callback, eval_steps=eval_steps, eval_before=eval_before,
                              resume_from=resume_from, **sft_overrides)
    except TrainingFailed as e:  # out of memory, non-finite loss: the last good weights are in the model
        if save and e.result is not None:
            e.result.saved_to = save_trained(model, adapter_dir, cfg)
            e.args = (f"{e.args[0]} The last good weights are saved in {e.result.saved_to}.",)
        raise
    if save:
        result.saved_to = save_trained(model, adapter_dir, cfg)
    return result, model
