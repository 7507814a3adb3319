"""One way to set up a TRL trainer, for every trainer ftlab runs (SFT in ftlab.train, reward / DPO / GRPO in
ftlab.align, GKD in ftlab.distill): the TRL arguments every trainer shares (trainer_args), the trainer built on
ftlab's callbacks with its data as datasets (build_trainer), and the non-finite guard around its train call
(train_guarded; ftlab.train.train_sft adds its own handling of Stop and out of memory around the same guard).

TRL is not imported here: each caller hands over the config and trainer classes it imported itself.
"""
from __future__ import annotations

import dataclasses
import os

import datasets
import torch
from transformers import PrinterCallback
from transformers.integrations import TensorBoardCallback
from transformers.integrations.integration_utils import default_logdir

from ftlab.guard import GoodWeights, NonFiniteLoss, free_memory
from ftlab.report import ReportCallback, TrainResult

# ftlab's optimizer names -> transformers' `optim` values
OPTIM = {"adamw": "adamw_torch", "adamw_8bit": "adamw_bnb_8bit", "paged_adamw_8bit": "paged_adamw_8bit", "sgd": "sgd"}


def trainer_args(config_class, cfg, *, eval_steps: int | None = None, **overrides):
    """A TRL config (SFTConfig, RewardConfig, DPOConfig, GRPOConfig, ...) from a TrainConfig: the precision
    that suits the device, logging every step, no saving, the run's steps, batch, rate, optimizer and seeds, and
    cfg.report_to's tracker (TRL's own: "tensorboard" writes event files to output_dir/runs/<date>_<host>/)."""
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
              report_to=cfg.report_to, disable_tqdm=True, include_num_input_tokens_seen="all",
              eval_strategy="steps" if eval_steps else "no", eval_steps=eval_steps, dataloader_num_workers=0,
              logging_nan_inf_filter=False)  # the default hides a nan loss from the logs: GoodWeights must see it
    if cfg.gradient_checkpointing:
        kw["activation_checkpointing_kwargs"] = {"use_reentrant": False}
    names = {f.name for f in dataclasses.fields(config_class)}  # GRPOConfig has no max_length, for one
    kw = {k: v for k, v in kw.items() if k in names}
    kw.update(overrides)
    return config_class(**kw)


def build_trainer(trainer_class, args, *, model, tokenizer, train_records: list[dict],
                  eval_records: list[dict] | None = None, listeners: list | None = None,
                  callback: ReportCallback | None = None, extra_callbacks: list | None = None, **trainer_kwargs):
    """`trainer_class` (a TRL trainer) with `args` (trainer_args(...)), the records as datasets.Dataset (no eval
    dataset without eval_records) and ftlab's callbacks in place: the run's ReportCallback (`callback`, or a new
    one for `listeners`; given both, the listeners hear the callback's run too) first, then `extra_callbacks`,
    and no PrinterCallback (our listeners report; the default printer would print each step's log dict). Other
    keyword arguments go to the trainer (peft_config, reward_funcs, teacher_model, ...). Returns (trainer, the
    ReportCallback)."""
    datasets.disable_progress_bars()  # the trainer tokenizes with map(): in a notebook each would add a progress bar
    cb = callback or ReportCallback(listeners)
    if listeners and callback is not None:  # a Run's callback: these listeners hear the run too
        callback.listeners += list(listeners)
    trainer = trainer_class(model=model, args=args, processing_class=tokenizer,
                            train_dataset=datasets.Dataset.from_list(list(train_records)),
                            eval_dataset=datasets.Dataset.from_list(list(eval_records)) if eval_records else None,
                            callbacks=[cb, *(extra_callbacks or [])], **trainer_kwargs)
    trainer.remove_callback(PrinterCallback)
    _log_beside_the_run(trainer)
    return trainer, cb


def _log_beside_the_run(trainer) -> None:
    """report_to="tensorboard": the event files go to output_dir/runs/<date>_<host>/ from the first log on.
    transformers' TensorBoardCallback learns its folder only when training begins; a log before that (ftlab's
    validation loss at step 0) would open a writer in the current folder's runs/ (SummaryWriter's default)."""
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback) and callback.logging_dir is None:
            callback.logging_dir = os.path.join(trainer.args.output_dir, default_logdir())


def train_guarded(trainer, cfg, result: TrainResult | None = None) -> None:
    """trainer.train() for the other TRL trainers (reward, DPO, GRPO, GKD) with train_sft's non-finite guard:
    at a nan/inf loss the run stops, the weights that gave the last finite loss are put back, and
    NonFiniteLoss says so (without it a bad temperature or beta trains on to non-finite weights in silence)."""
    guard = GoodWeights()
    trainer.add_callback(guard)
    trainer.train()
    stop_if_non_finite(trainer, guard, cfg, result)


def stop_if_non_finite(trainer, guard: GoodWeights, cfg, result: TrainResult | None = None, *,
                       count_good_steps: bool = False) -> None:
    """After trainer.train(): if `guard` saw a non-finite loss, mark `result` stopped (count_good_steps: its steps
    are those up to the restored weights), release the optimizer's memory and raise NonFiniteLoss."""
    if guard.bad_step is None:
        return
    if result is not None:
        result.stopped, result.stop_reason = True, f"non-finite loss at step {guard.bad_step}"
        if count_good_steps:
            result.steps = guard.good_step - 1 if guard.good_step is not None else guard.bad_step
    release(trainer)
    raise NonFiniteLoss(guard.message(cfg), result)


def release(trainer) -> None:
    """Drop the optimizer state and cached blocks after a failure: the kernel goes on with memory back."""
    trainer.optimizer = None
    trainer.lr_scheduler = None
    free_memory()
