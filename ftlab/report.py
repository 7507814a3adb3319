"""What a run reports, and how it is told to stop: TrainResult (steps, losses, time, tokens, what seq_len cut or
left out) and ReportCallback, which turns the trainer's logs into events {"kind": "step", "step", "loss",
"learning_rate", "tokens_per_s", ...} for whoever listens (a live plot, a log line, a memory monitor) and stops
at the next step when request_stop() is called (from any thread).
"""
from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import psutil
import torch
from transformers import TrainerCallback


@dataclass
class TrainResult:
    steps: int = 0
    losses: list = field(default_factory=list)      # (step, train loss) per logged step
    eval_losses: list = field(default_factory=list)  # (step, validation loss)
    eval_accuracies: list = field(default_factory=list)  # (step, validation next-token accuracy on completions)
    seconds: float = 0.0
    tokens: int = 0
    stopped: bool = False                           # True when a stop request ended the run early
    stop_reason: str = ""
    saved_to: str = ""                              # where save_trained put the last completed step's weights
    checkpoint: str = ""                            # after a Stop: where to resume from (optimizer state included)
    examples: int = 0                               # training examples given
    dropped_examples: int = 0                       # of them, left out: no completion token within seq_len
    truncated_examples: int = 0                     # of those kept, cut at seq_len (the end of the completion lost)
    eval_dropped_examples: int = 0                  # held-out examples left out for the same reason

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

    @property
    def eval_accuracy_before(self) -> float:
        a = self.eval_accuracies
        return a[0][1] if a and a[0][0] == 0 else math.nan

    @property
    def eval_accuracy_after(self) -> float:
        return self.eval_accuracies[-1][1] if self.eval_accuracies else math.nan

    def summary(self) -> dict:
        return {"steps": self.steps, "first_loss": self.first_loss, "last_loss": self.last_loss,
                "seconds": self.seconds, "tokens": self.tokens, "tokens_per_s": self.tokens_per_s,
                "stopped": self.stopped, "stop_reason": self.stop_reason, "saved_to": self.saved_to,
                "checkpoint": self.checkpoint, "examples": self.examples, "dropped_examples": self.dropped_examples,
                "truncated_examples": self.truncated_examples, "eval_dropped_examples": self.eval_dropped_examples,
                "eval_loss_before": self.eval_loss_before, "eval_loss_after": self.eval_loss_after,
                "eval_accuracy_before": self.eval_accuracy_before, "eval_accuracy_after": self.eval_accuracy_after,
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

    def load_history(self, checkpoint: str) -> None:
        """Resuming: the losses logged before the checkpoint, so the curve continues rather than restarts."""
        with open(os.path.join(checkpoint, "trainer_state.json")) as f:
            history = json.load(f)["log_history"]
        self.result.losses = [(h["step"], h["loss"]) for h in history if "loss" in h]
        self.result.eval_losses = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
        for step, loss in self.result.losses:
            self._emit({"kind": "step", "step": step, "max_steps": None, "loss": loss, "tokens_per_s": 0.0,
                        "resumed": True})

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
            if "eval_mean_token_accuracy" in logs:  # TRL's: share of completion tokens predicted exactly
                self.result.eval_accuracies.append((state.global_step, float(logs["eval_mean_token_accuracy"])))
            self._emit({"kind": "eval", "step": state.global_step, "eval_loss": float(logs["eval_loss"])})
        if "loss" in logs:  # a request made while this step was reported stops after it, not after the next
            self.on_step_end(args, state, control)

    def on_train_end(self, args, state, control, **kw):
        self.finish(state)

    def finish(self, state) -> None:
        """Close the result (also when training ended by an exception, where on_train_end never runs)."""
        self.result.steps = state.global_step
        self.result.seconds = time.perf_counter() - (self._t0 or time.perf_counter())
        self.result.tokens = int(state.num_input_tokens_seen or 0)
        self._emit({"kind": "end", "result": self.result})


def memory_now() -> dict:
    """Memory in use now, cheaply (a few µs): on CUDA the allocator's current and peak allocation, else
    the process's resident memory (the CPU has no allocator counters; see ftlab.measure)."""
    if torch.cuda.is_available():
        return {"memory_gib": torch.cuda.memory_allocated() / 2**30,
                "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30, "memory_kind": "cuda allocated"}
    return {"memory_gib": psutil.Process().memory_info().rss / 2**30, "memory_kind": "process RSS"}
