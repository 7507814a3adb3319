"""Run and Stop: training from the panel, in a background thread, with live plots.

`RunControls(panel, train)` shows Run and Stop buttons, a status line, a progress bar, a live loss
plot and a live memory plot. Run starts `train(panel.config, callback)` in a background thread
(ftlab.runner.Run) so the notebook stays live and the cell returns at once; Stop ends training after
the current step (the last completed step is saved by ftlab.train.finetune). Under papermill nothing
is clicked: `controls.run(background=False)` trains in the foreground with the lab's parameters.
"""
from __future__ import annotations

import html

import ipywidgets as W
import torch
from IPython.display import display

from ftlab.runner import Run
from ftlab.widgets.plots import LossPlot, MemoryPlot, TrainingProgress


class NotFinished(RuntimeError):
    """Raised by `require_result()` while no run has finished. IPython prints only the message (no
    traceback): under "Run all" the notebook stops there, and the cell can be re-run once training ends."""

    def _render_traceback_(self):
        return [f"⏳ {self}"]


class RunControls:
    def __init__(self, panel, train, listeners: list | None = None):
        """panel: a ConfigPanel; train(config, callback) -> (TrainResult, model), e.g. via ftlab.train.finetune."""
        self.panel, self.train, self.extra = panel, train, list(listeners or [])
        self.run_button = W.Button(description="Run", button_style="success", icon="play",
                                   tooltip="train with the set-up above")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True,
                                    tooltip="stop after the current step; the last completed step is saved")
        self.status = W.HTML("Press <b>Run</b> to train with the set-up above.")
        self.progress, self.loss_plot, self.memory_plot = TrainingProgress(), LossPlot(), MemoryPlot()
        self.run_button.on_click(lambda _: self.run(background=True))
        self.stop_button.on_click(lambda _: self.stop())
        self.current: Run | None = None
        self.current_config = None   # the TrainConfig of the current (or last) run
        self.loss_plot.widget.layout.width, self.memory_plot.widget.layout.width = 560, 440
        self.widget = W.VBox([W.HBox([self.run_button, self.stop_button, self.status]), self.progress.widget,
                              W.HBox([self.loss_plot.widget, self.memory_plot.widget],
                                     layout=W.Layout(flex_flow="row wrap"))])

    # --- actions ------------------------------------------------------------------------------
    def run(self, background: bool = True) -> Run | None:
        """Start a run with the panel's config. Invalid settings: an inline message, no run."""
        if self.current is not None and self.current.running:
            self._say("A run is in progress: press Stop first.", "#b00020")
            return None
        if self.panel.error is not None:
            self._say(f"Fix <b>{html.escape(self.panel.error.field)}</b> in the panel first: "
                      f"{html.escape(str(self.panel.error))}", "#b00020")
            return None
        cfg = self.panel.config
        est = self.panel.estimate
        # the estimate is GPU memory: beside a CPU run's resident memory it would mislead
        self.memory_plot.set_estimate(est.peak_allocated_gib if est is not None and torch.cuda.is_available() else None)
        self.loss_plot.reset()
        self.memory_plot.reset()
        self.progress.bar.bar_style, self.progress.bar.value = "info", 0
        run = Run(lambda cb: self.train(cfg, cb),
                  listeners=[self.progress, self.loss_plot, self.memory_plot, *self.extra, self._on_event])
        self.current, self.current_config = run, cfg
        self.run_button.disabled, self.stop_button.disabled = True, False
        self._say(f"training {html.escape(cfg.method)} on {html.escape(cfg.model)} …", "#1565c0")
        run.start(background=background)
        return run

    def stop(self) -> None:
        if self.current is not None and self.current.running:
            self.current.stop("Stop pressed")
            self.stop_button.disabled = True
            self._say("stopping after the current step …", "#e65100")

    # --- results --------------------------------------------------------------------------------
    @property
    def value(self):
        """(TrainResult, model) of the last finished run, or None."""
        return self.current.value if self.current is not None and self.current.done and not self.current.error else None

    def require_result(self):
        """(TrainResult, model) of the last finished run; NotFinished (message only) when there is none yet."""
        if self.current is None:
            raise NotFinished("No run yet: press Run above, then run this cell again.")
        if not self.current.done:
            raise NotFinished("Training is still running: wait for it (or press Stop), then run this cell again.")
        if self.current.error is not None:
            raise NotFinished(f"The last run failed: {self.current.error}. Change the set-up and press Run again.")
        return self.current.value

    # --- events (called from the training thread) -----------------------------------------------
    def _on_event(self, event: dict) -> None:
        kind = event.get("kind")
        if kind == "finished":
            res = event["result"]
            what = (f"stopped at step {res.steps} ({html.escape(res.stop_reason)})" if res.stopped
                    else f"done: {res.steps} steps")
            saved = f" · saved to {html.escape(res.saved_to)}" if res.saved_to else ""
            data = ""
            if res.dropped_examples or res.truncated_examples:  # what TRL's cut at seq_len did to the data
                data = (f" · <span style='color:#e65100'>of {res.examples} examples {res.dropped_examples} left out, "
                        f"{res.truncated_examples} cut at seq_len</span>")
            self._say(f"{what} in {res.seconds:.0f} s, {res.tokens_per_s:.0f} tokens/s{saved}{data}", "#2e7d32")
        elif kind == "error":
            err = event["error"]
            self.progress.bar.bar_style = "danger"
            self._say(f"⚠ {html.escape(type(err).__name__)}: {html.escape(str(err))}", "#b00020")
        if kind in ("finished", "error"):
            self.run_button.disabled, self.stop_button.disabled = False, True

    def _say(self, text: str, color: str) -> None:
        self.status.value = f"<span style='color:{color}'>{text}</span>"

    def _ipython_display_(self):
        display(self.widget)
