"""Training through TRL's trainers, observed by one callback.

ftlab does not write a trainer: TRL's SFTTrainer computes the loss (completion-only on
prompt/completion data, with a fused LM head that never holds the full logits), steps the optimizer
and schedules the learning rate. `ReportCallback` turns the trainer's logs into events
{"kind": "step", "step", "loss", "learning_rate", "tokens_per_s", ...} for whoever listens (a live
plot, a log line, a memory monitor) and stops at the next step when `request_stop()` is called.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from transformers import PrinterCallback, TrainerCallback

# ftlab's optimizer names -> transformers' `optim` values
OPTIM = {"adamw": "adamw_torch", "adamw_8bit": "adamw_bnb_8bit", "paged_adamw_8bit": "paged_adamw_8bit", "sgd": "sgd"}


@dataclass
class TrainResult:
    steps: int = 0
    losses: list = field(default_factory=list)      # (step, train loss) per logged step
    eval_losses: list = field(default_factory=list)  # (step, validation loss)
    seconds: float = 0.0
    tokens: int = 0
    stopped: bool = False                           # True when a stop request ended the run early
    stop_reason: str = ""
    saved_to: str = ""                              # where save_trained put the last completed step's weights

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def first_loss(self) -> float:
        return self.losses[0][1] if self.losses else math.nan

    @property
    def last_loss(self) -> float:
        return self.losses[-1][1] if self.losses else math.nan

    @property
    def eval_loss_before(self) -> float:
        return self.eval_losses[0][1] if self.eval_losses and self.eval_losses[0][0] == 0 else math.nan

    @property
    def eval_loss_after(self) -> float:
        return self.eval_losses[-1][1] if self.eval_losses else math.nan

    def summary(self) -> dict:
        return {"steps": self.steps, "first_loss": self.first_loss, "last_loss": self.last_loss,
                "seconds": self.seconds, "tokens": self.tokens, "tokens_per_s": self.tokens_per_s,
                "stopped": self.stopped, "stop_reason": self.stop_reason, "saved_to": self.saved_to,
                "eval_loss_before": self.eval_loss_before, "eval_loss_after": self.eval_loss_after,
                "losses": self.losses, "eval_losses": self.eval_losses}


class ReportCallback(TrainerCallback):
    """Reports each logged step to listeners and honours stop requests (from any thread)."""

    def __init__(self, listeners: list[Callable[[dict], None]] | None = None):
        self.listeners = list(listeners or [])
        self.result = TrainResult()
        self._stop = threading.Event()
        self._t0 = None
        self._last = (0.0, 0)

    def request_stop(self, reason: str = "stop requested") -> None:
        self.result.stop_reason = reason
        self._stop.set()

    def _emit(self, event: dict) -> None:
        for listener in self.listeners:
            listener(event)

    def on_train_begin(self, args, state, control, **kw):
        self._t0 = time.perf_counter()
        self._last = (self._t0, 0)
        self._emit({"kind": "begin", "max_steps": state.max_steps})

    def on_step_end(self, args, state, control, **kw):
        if self._stop.is_set():
            control.should_training_stop = True
            self.result.stopped = True

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        now = time.perf_counter()
        if self._t0 is None:  # an evaluation before training starts
            self._t0 = now
        tokens = int(state.num_input_tokens_seen or 0)
        if "loss" in logs:
            t_prev, tok_prev = self._last
            self._last = (now, tokens)
            self.result.losses.append((state.global_step, float(logs["loss"])))
            self._emit({"kind": "step", "step": state.global_step, "max_steps": state.max_steps,
                        "loss": float(logs["loss"]), "learning_rate": logs.get("learning_rate"),
                        "tokens_per_s": (tokens - tok_prev) / max(now - t_prev, 1e-9),
                        "elapsed_s": now - self._t0, **memory_now()})
        if "eval_loss" in logs:
            self.result.eval_losses.append((state.global_step, float(logs["eval_loss"])))
            self._emit({"kind": "eval", "step": state.global_step, "eval_loss": float(logs["eval_loss"])})

    def on_train_end(self, args, state, control, **kw):
        self.result.steps = state.global_step
        self.result.seconds = time.perf_counter() - self._t0
        self.result.tokens = int(state.num_input_tokens_seen or 0)
        self._emit({"kind": "end", "result": self.result})


def memory_now() -> dict:
    """Memory in use now, cheaply (a few µs): on CUDA the allocator's current and peak allocation, else
    the process's resident memory (the CPU has no allocator counters; see ftlab.measure)."""
    import torch
    if torch.cuda.is_available():
        return {"memory_gib": torch.cuda.memory_allocated() / 2**30,
                "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30, "memory_kind": "cuda allocated"}
    import psutil
    return {"memory_gib": psutil.Process().memory_info().rss / 2**30, "memory_kind": "process RSS"}


def sft_config(cfg, *, eval_steps: int | None = None, **overrides):
    """SFTConfig from a TrainConfig: the precision that suits the device, logging every step, no saving."""
    import torch
    from trl import SFTConfig
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
              report_to="none", disable_tqdm=True, include_num_input_tokens_seen="all", packing=False,
              eval_strategy="steps" if eval_steps else "no", eval_steps=eval_steps, dataloader_num_workers=0)
    if cfg.gradient_checkpointing:
        kw["activation_checkpointing_kwargs"] = {"use_reentrant": False}
    kw.update(overrides)
    return SFTConfig(**kw)


def train_sft(model, tokenizer, train_records: list[dict], cfg, *, eval_records: list[dict] | None = None,
              listeners: list | None = None, eval_steps: int | None = None, callback: ReportCallback | None = None,
              eval_before: bool = True, **sft_overrides) -> tuple[TrainResult, object]:
    """Fine-tune `model` (already prepared by ftlab.methods.apply_method) on prompt/completion records.

    With eval_records, the validation loss is computed before training (step 0) and after it, and
    every `eval_steps` steps if given. Returns (TrainResult, trainer). A stop request ends the run after the current step; the
    model keeps the weights of the last completed step.
    """
    import datasets
    from datasets import Dataset
    from trl import SFTTrainer
    datasets.disable_progress_bars()  # in a notebook each map() would add a progress widget; our listeners report
    if not train_records:
        raise ValueError("train_records is empty: at least one training example is required")
    cb = callback or ReportCallback(listeners)
    if listeners and callback is not None:
        cb.listeners += list(listeners)
    trainer = SFTTrainer(model=model, args=sft_config(cfg, eval_steps=eval_steps, **sft_overrides),
                         train_dataset=Dataset.from_list(train_records),
                         eval_dataset=Dataset.from_list(eval_records) if eval_records else None,
                         processing_class=tokenizer, callbacks=[cb])
    trainer.remove_callback(PrinterCallback)  # our listeners report; the default printer would repeat each log
    if eval_records and eval_before:  # the same held-out loss at step 0: the fairest "did it learn" signal
        trainer.evaluate()  # logged at step 0 through the callback
    trainer.train()
    if eval_records:
        trainer.evaluate()  # logs eval_loss at the last step through the callback
    model.eval()
    return cb.result, trainer


def finetune(cfg, train_records: list[dict], eval_records: list[dict] | None = None, *, model=None, tokenizer=None,
             listeners: list | None = None, callback: ReportCallback | None = None, eval_steps: int | None = None,
             save: bool = True, eval_before: bool = True, apply: bool = True) -> tuple[TrainResult, object]:
    """Everything a Run button does: load the base (unless given), apply cfg.method, train with SFTTrainer,
    and save what was trained (also after a Stop: the last completed step) to `output_dir/adapter`.

    apply=False: `model` was already prepared with ftlab.methods.apply_method. Returns (TrainResult, model).
    """
    import os

    from ftlab.methods import apply_method, check_setup, save_trained
    from ftlab.models import resolve_arch
    check_setup(cfg, resolve_arch(model.config) if model is not None else None)
    if model is None:
        from ftlab.models import load_model
        model, tokenizer = load_model(cfg.model, bits=cfg.effective_bits, trust_remote_code=cfg.trust_remote_code,
                                      quant_type=cfg.quant_type, double_quant=cfg.double_quant)
    if apply:
        model = apply_method(model, cfg)
    result, _ = train_sft(model, tokenizer, train_records, cfg, eval_records=eval_records, listeners=listeners,
                          callback=callback, eval_steps=eval_steps, eval_before=eval_before)
    if save:
        result.saved_to = save_trained(model, os.path.join(cfg.output_dir, "adapter"), cfg)
    return result, model


class Run:
    """One training run, in the foreground (papermill, scripts) or in a background thread (a notebook).

    `target(callback)` does the work and must pass `callback` (a ReportCallback) to the trainer, e.g.
    `Run(lambda cb: finetune(cfg, data, callback=cb))`. In the background the notebook stays live: a Stop
    button calls `run.stop()`, which ends training after the current step; the cell that started it has
    already returned. Listeners get {"kind": "finished", "result"} once target has returned (training, the
    last evaluation and the save are done), or {"kind": "error", "error": exc} if it failed.
    """

    def __init__(self, target: Callable[[ReportCallback], object], listeners: list | None = None):
        self.target = target
        self.callback = ReportCallback(listeners)
        self.value = None            # what target returned
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()

    @property
    def result(self) -> TrainResult:
        return self.callback.result

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._done.is_set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def _work(self):
        try:
            self.value = self.target(self.callback)
            self.callback._emit({"kind": "finished", "result": self.result})  # after the last eval and the save
        except BaseException as e:  # reported to listeners and kept: a background thread has no one to raise to
            self.error = e
            self.callback._emit({"kind": "error", "error": e})
        finally:
            self._done.set()

    def start(self, background: bool = True) -> "Run":
        if background:
            self._thread = threading.Thread(target=self._work, name="ftlab-train", daemon=True)
            self._thread.start()
        else:
            self._work()
            if self.error is not None:
                raise self.error
        return self

    def stop(self, reason: str = "Stop pressed") -> None:
        self.callback.request_stop(reason)

    def wait(self, timeout: float | None = None) -> TrainResult:
        """Block until the run ends (scripts and tests; in a notebook this would also block the Stop button)."""
        self._done.wait(timeout)
        if self.error is not None:
            raise self.error
        return self.result
