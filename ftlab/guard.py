"""What keeps a run from losing work when it fails: out-of-memory and non-finite losses caught with a message
that says what to do, and the last good weights kept (GoodWeights). Checkpoints are ftlab.checkpoints.
"""
from __future__ import annotations

import gc
import math
from dataclasses import replace

import torch
from transformers import TrainerCallback

from ftlab.errors import ConfigError
from ftlab.memory import estimate_memory
from ftlab.method_table import QLORA


class TrainingFailed(RuntimeError):
    """A run ended early for a reason the user must act on. `.result` is the TrainResult so far (its
    `saved_to` says where the last good weights are). IPython shows the message only, no traceback."""

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result

    def _render_traceback_(self):
        return [f"⚠ {type(self).__name__}: {self}"]


class OutOfMemory(TrainingFailed):
    pass


class NonFiniteLoss(TrainingFailed):
    pass


def oom_message(cfg, error: BaseException) -> str:
    """The estimate, what was free, and the cheapest fixes first (each with what it saves, from the calculator)."""
    free = ""
    if torch.cuda.is_available():
        f, total = torch.cuda.mem_get_info()
        free = f" The GPU had {f / 2**30:.2f} GiB free of {total / 2**30:.2f} GiB when it failed."
    try:
        est = estimate_memory(cfg)
        head = f"Out of memory: this set-up needs about {est.total_gib:.1f} GiB (ftlab's estimate).{free}"
    except Exception:  # an unknown model offline: still give the fixes
        head = f"Out of memory.{free}"
    fixes = []
    for label, change in (("gradient_checkpointing=True", dict(gradient_checkpointing=True)),
                          (f"batch_size={max(1, cfg.batch_size // 2)}", dict(batch_size=max(1, cfg.batch_size // 2))),
                          (f"bits=4 with method={QLORA.name!r}", dict(method=QLORA.name, bits=4)),
                          (f"seq_len={max(8, cfg.seq_len // 2)}", dict(seq_len=max(8, cfg.seq_len // 2)))):
        if all(getattr(cfg, k) == v for k, v in change.items()):
            continue  # already so
        try:
            changed = replace(cfg, **change)
        except ConfigError:  # this fix makes a set-up the config refuses (prefix tuning with gradient
            continue         # checkpointing, say): never suggest it
        try:
            fixes.append(f"{label} (→ {estimate_memory(changed).total_gib:.1f} GiB)")
        except Exception:  # the estimate alone failed (an unknown model offline): the fix still stands
            fixes.append(label)
    tried = (f" Cheapest fixes first: {'; '.join(fixes)}." if fixes else
             " ftlab knows no cheaper set-up of this run: use a smaller model or a GPU with more memory.")
    return f"{head}{tried} ({type(error).__name__}: {str(error)[:200]})"


def free_memory() -> None:
    """Give cached GPU memory back after a failure, so the next cell (or run) starts clean."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class GoodWeights(TrainerCallback):
    """Stops the run at a non-finite loss and puts back the weights that gave the last finite one.

    The loss of step k is computed with the weights from before step k. When it is nan/inf, those weights
    (the result of update k-1) are suspect; the weights from before step k-1 gave a finite loss, so they
    are the last known good. Two copies are kept, alternating, 4 bytes a trainable parameter each (on the
    CPU: a GPU run's memory is untouched). Above `max_params` trainable parameters (a full fine-tune of a
    large model) no copy is kept and the message says so."""

    def __init__(self, max_params: int = 200_000_000):
        self.max_params = max_params
        self.params, self.copies, self.taken, self.stream = [], None, {}, None
        self.bad_step: int | None = None
        self.good_step: int | None = None   # the step whose (finite) loss the restored weights gave

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.params = [p for p in model.parameters() if p.requires_grad]
        if sum(p.numel() for p in self.params) <= self.max_params:
            on_gpu = any(p.is_cuda for p in self.params)
            self.copies = [[torch.empty(p.shape, dtype=p.dtype, device="cpu", pin_memory=on_gpu) for p in self.params]
                           for _ in range(2)]
            # On a GPU the copy runs on its own stream, overlapping the forward and backward (which only read
            # the weights); the optimizer step waits for it (on_pre_optimizer_step). Measured on an H100 with it
            # (scripts/bench_throughput.py --ablate): bare TRL + this guard 1.05x (full) / 1.03x (LoRA) bare TRL.
            self.stream = torch.cuda.Stream() if on_gpu else None

    def on_step_begin(self, args, state, control, **kw):
        step = state.global_step + 1  # the step about to run
        if self.copies is None or self.bad_step is not None:
            return
        if self.stream is None:
            for c, p in zip(self.copies[step % 2], self.params):
                c.copy_(p.detach())
        else:
            self.stream.wait_stream(torch.cuda.current_stream())  # the weights as the last update left them
            with torch.cuda.stream(self.stream):
                for c, p in zip(self.copies[step % 2], self.params):
                    c.copy_(p.detach(), non_blocking=True)
        self.taken[step % 2] = step

    def on_pre_optimizer_step(self, args, state, control, **kw):
        if self.stream is not None and self.copies is not None:
            torch.cuda.current_stream().wait_stream(self.stream)  # don't update weights still being copied

    def on_log(self, args, state, control, logs=None, **kw):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(loss) or self.bad_step is not None:
            return
        k = self.bad_step = state.global_step
        control.should_training_stop = True
        good = k - 1 if self.taken.get((k - 1) % 2) == k - 1 else None
        if self.copies is not None and good is not None:
            if self.stream is not None:
                self.stream.synchronize()
            with torch.no_grad():
                for c, p in zip(self.copies[good % 2], self.params):
                    p.copy_(c.to(p.device))
            self.good_step = good

    def message(self, cfg) -> str:
        kept = (f"the weights that gave the last finite loss (step {self.good_step}) are put back"
                if self.good_step is not None else
                "the weights could not be put back (no earlier step, or too many trainable parameters to copy)")
        return (f"The training loss became non-finite (nan or inf) at step {self.bad_step}; the run stopped and "
                f"{kept}. Usual causes, most likely first: learning_rate={cfg.learning_rate:g} too high (try "
                f"{cfg.learning_rate / 10:g}), fp16 overflow (use bf16 or bits=32), bad examples in the data.")
