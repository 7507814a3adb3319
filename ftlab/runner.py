"""The notebook's runner: one training run in the foreground (papermill, scripts) or on the one long-lived
background thread that every run of the process shares, so the notebook stays live and Stop can be pressed.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable

from ftlab.errors import ConfigError, RunStateError, check_listeners
from ftlab.report import ReportCallback, TrainResult


class _TrainingThread:
    """The one thread that runs every background training of this process, one run after another.

    Why one long-lived thread and not a new one per run: PyTorch keeps some caches per thread. The cuDNN
    attention backend of scaled_dot_product_attention (the one an H100 uses for bf16) builds an execution
    graph for every new input shape and keeps it in a `thread_local` cache (ATen's cudnn/MHA.cpp). Sequence
    lengths vary from batch to batch, so a fresh thread for each run rebuilt tens of graphs at every run
    (tens of ms each), where the main thread had them from its earlier runs: on an H100 its forward calls
    blocked 1.8 s longer in 40 steps, about the whole gap of a background run behind a foreground one (0.66 to
    0.85x). Reusing this thread keeps its caches, as the main thread keeps its own.
    Why not concurrent.futures.ThreadPoolExecutor: its threads are joined at interpreter exit, so a kernel
    shutting down would wait for a run to finish; this thread is a daemon.
    """

    def __init__(self):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> threading.Thread:
        """Queue `job` (which must catch its own exceptions) and return the thread that will run it."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="ftlab-train", daemon=True)
                self._thread.start()
            self._jobs.put(job)
            return self._thread

    def _loop(self) -> None:
        while True:
            self._jobs.get()()


TRAINING_THREAD = _TrainingThread()


class Run:
    """One training run, in the foreground (papermill, scripts) or in a background thread (a notebook).

    `target(callback)` does the work and must pass `callback` (a ReportCallback) to the trainer, e.g.
    `Run(lambda cb: finetune(cfg, data, callback=cb))`. In the background the notebook stays live: a Stop
    button calls `run.stop()`, which ends training after the current step; the cell that started it has
    already returned. Background runs share one thread (TRAINING_THREAD): a second one started while the
    first trains waits for it. Listeners get {"kind": "finished", "result"} once target has returned (training, the
    last evaluation and the save are done), or {"kind": "error", "error": exc} if it failed.
    """

    def __init__(self, target: Callable[[ReportCallback], object], listeners: list | None = None):
        if not callable(target):
            raise ConfigError("target", target, "a function taking the run's callback, e.g. "
                              "lambda cb: finetune(cfg, train, callback=cb)")
        check_listeners(listeners)
        self.target = target
        self.callback = ReportCallback(listeners)
        self.value = None            # what target returned
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None  # the thread that runs (or ran) it in the background
        self._started = False
        self._ended = False          # target has returned or failed (done), before the listeners are told
        self._done = threading.Event()  # ... and they have been told (wait() returns)

    @property
    def result(self) -> TrainResult:
        return self.callback.result

    @property
    def running(self) -> bool:
        return self._started and not self._done.is_set()

    @property
    def done(self) -> bool:
        """True once target has returned or failed: already while the listeners hear of it, so that what a listener
        shows ("done: 10 steps") is true of the run at once (a notebook cell run on seeing it gets the result)."""
        return self._ended or self._done.is_set()

    def _work(self):
        try:
            self.value = self.target(self.callback)
            self._ended = True
            self.callback._emit({"kind": "finished", "result": self.result})  # after the last eval and the save
        except BaseException as e:  # reported to listeners and kept: a background thread has no one to raise to
            self.error, self._ended = e, True
            self.callback._emit({"kind": "error", "error": e})
        finally:
            self._done.set()

    def start(self, background: bool = True) -> "Run":
        if self._started:  # a second start would run target again on the same callback and result
            raise RunStateError("this Run was started already; make a new Run(...) to train again")
        self._started = True
        if background:
            self.thread = TRAINING_THREAD.submit(self._work)
        else:
            self._work()
            if self.error is not None:
                raise self.error
        return self

    def stop(self, reason: str = "Stop pressed") -> None:
        if not self._started:  # a stop request kept until start would end the run after its first step
            raise RunStateError("nothing to stop: this Run has not been started (run.start() first)")
        self.callback.request_stop(reason)

    def wait(self, timeout: float | None = None) -> TrainResult:
        """Block until the run ends (scripts and tests; in a notebook this would also block the Stop button)."""
        if not self._started:  # would block for ever (or hand back an empty result after `timeout`)
            raise RunStateError("this Run has not been started: call run.start() before run.wait()")
        self._done.wait(timeout)
        if self.error is not None:
            raise self.error
        return self.result
