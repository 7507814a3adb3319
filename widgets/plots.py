"""Live plots: plotly FigureWidgets updated in place (never rebuilt), throttled so plotting stays cheap.

Plotting runs on the training thread (a listener is called at every step), so what it costs comes out of
training. Three things keep it small (scripts/bench_plots.py measures it in a real kernel):
- traces are handed to plotly as numpy arrays, which its widget serialiser sends as binary buffers: a
  redraw costs about the same at 5,000 points as at 50 (as Python lists it grew to 30-60 ms);
- a plot redraws at most every `min_interval_s`, and after a redraw that took d seconds waits at least
  d / 0.5 % (`Throttle`), so however slow a redraw gets, each display takes at most ~0.5 % of the time;
- the progress bar is throttled the same way, and nothing is sent when nothing changed.
"""
from __future__ import annotations

import importlib.util
import sys
import time
from itertools import cycle

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots
from transformers.utils import logging as hf_logging

from ftlab.method_table import FAMILIES
from ftlab.widgets import figures
from ftlab.widgets.figures import new_figure, refresh, view


class Throttle:
    """When a live display may redraw: at most every `min_interval_s` seconds, and never so often that
    redrawing takes more than `share` of the time (a redraw that took d seconds waits d / share).
    `min_interval_s=0` redraws at every event (tests)."""

    def __init__(self, min_interval_s: float, share: float = 0.005, clock=time.perf_counter):
        self.min_interval_s, self.share, self.clock = min_interval_s, share, clock
        self.interval, self._last = min_interval_s, -float("inf")

    def __call__(self, redraw, force: bool = False) -> None:
        start = self.clock()
        if force or start - self._last >= self.interval:
            redraw()
            cost = self.clock() - start
            self._last = start
            self.interval = max(self.min_interval_s, cost / self.share) if self.min_interval_s > 0 else 0.0

    def reset(self) -> None:
        self.interval, self._last = self.min_interval_s, -float("inf")


def _arrays(xs, ys):
    """Trace data as numpy arrays (sent as binary buffers; lists are JSON-encoded element by element)."""
    return np.asarray(xs), np.asarray(ys, dtype=np.float64)


def on_colab() -> bool:
    """True in a Google Colab kernel (its google.colab package is there)."""
    if "google.colab" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):  # no google package, or one without a spec
        return False


def setup_notebook(static_figures: bool | None = None) -> None:
    """Plotly output that renders in JupyterLab and in nbconvert's HTML offline (plotly.js embedded), and
    no "Loading weights" progress bar from transformers each time a lab loads a model (a lab loads several;
    the bars filled the notebook with empty widgets). On Colab: third-party widgets (plotly 7's FigureWidget
    is an anywidget) render only after enable_custom_widget_manager(), which anywidget's own display would
    call but plotly's replaces; static figures need Colab's renderer; and a plotly widget inside an ipywidgets
    box can still show a blank cell there, so plots are static figures redrawn after each update
    (ftlab.widgets.figures). `static_figures`: True or False to choose that anywhere (None: on Colab only)."""
    colab = on_colab()
    figures.static_figures(colab if static_figures is None else static_figures)  # ConfigError for a non-bool
    pio.renderers.default = "plotly_mimetype+notebook"
    if colab:
        from google.colab import output  # lazy: exists only on Colab
        output.enable_custom_widget_manager()
        pio.renderers.default = "colab"
    hf_logging.disable_progress_bar()


class LossPlot:
    """Train loss per step and validation loss as they arrive; a training listener (`plot(event)`).

    Redraws at most every `min_interval_s` seconds (a redraw sends the whole trace to the browser),
    and always on eval and end events, so the plot never slows training measurably.
    """

    def __init__(self, title: str = "Training loss", min_interval_s: float = 0.5):
        self.fig = new_figure(title=title, xaxis_title="step", yaxis_title="loss",
                              height=320, margin=dict(l=50, r=20, t=50, b=40))
        self.fig.add_scatter(x=[], y=[], mode="lines+markers", name="train")
        self.fig.add_scatter(x=[], y=[], mode="lines+markers", name="validation")
        self.steps, self.losses, self.eval_steps, self.eval_losses = [], [], [], []
        self.throttle = Throttle(min_interval_s)
        self.widget = view(self.fig)  # what a box shows (ftlab.widgets.figures)

    def __call__(self, event: dict) -> None:
        kind = event.get("kind")
        if kind == "step":
            self.steps.append(event["step"])
            self.losses.append(event["loss"])
        elif kind == "eval":
            self.eval_steps.append(event["step"])
            self.eval_losses.append(event["eval_loss"])
        self.throttle(self.redraw, force=kind in ("eval", "end"))

    def reset(self) -> None:
        self.steps, self.losses, self.eval_steps, self.eval_losses = [], [], [], []
        self.throttle.reset()
        self.redraw()

    def redraw(self) -> None:
        with self.fig.batch_update():
            self.fig.data[0].x, self.fig.data[0].y = _arrays(self.steps, self.losses)
            self.fig.data[1].x, self.fig.data[1].y = _arrays(self.eval_steps, self.eval_losses)
        refresh(self.fig)

    def figure(self) -> go.Figure:
        """A static copy (for exported HTML, where widget views don't render)."""
        return go.Figure(self.fig)


class TrainingProgress:
    """A progress bar with step, loss and throughput; a training listener."""

    def __init__(self, min_interval_s: float = 0.25):
        self.bar = W.IntProgress(value=0, min=0, max=1, description="step", bar_style="info",
                                 layout=W.Layout(width="60%"))
        self.label = W.HTML("waiting to start")
        self.widget = W.HBox([self.bar, self.label])
        self.throttle = Throttle(min_interval_s)  # each update is two comm messages: not at every fast step

    def __call__(self, event: dict) -> None:
        if event.get("kind") == "begin":
            self.bar.max = max(event["max_steps"], 1)
            self.throttle.reset()
        elif event.get("kind") == "step":
            last = event["max_steps"] is not None and event["step"] >= event["max_steps"]
            self.throttle(lambda: self._show_step(event), force=last)
        elif event.get("kind") in ("end", "finished"):
            # "end": the trainer's last step (the final evaluation and the save may follow); "finished": a Run's
            # target has returned, so only then is the run "done" (a cell asking for its result gets it)
            res = event["result"]
            self.bar.value = res.steps  # the last step may have fallen between two throttled updates
            self.bar.bar_style = "warning" if res.stopped else "success"
            word = "stopped" if res.stopped else "done" if event["kind"] == "finished" else "trained"
            self.label.value = f"{word}: {res.steps} steps in {res.seconds:.0f} s · last loss {res.last_loss:.3f}"

    def _show_step(self, event: dict) -> None:
        self.bar.value = event["step"]
        self.label.value = (f"{event['step']}/{event['max_steps']} · loss {event['loss']:.3f} · "
                            f"{event['tokens_per_s']:.0f} tokens/s")


class MemoryPlot:
    """Memory in use at each step (CUDA: allocated and peak; CPU: process RSS), beside the estimate.

    A training listener like LossPlot, throttled the same way. `estimate_gib` draws the calculator's
    peak-allocated estimate as a dashed line (only meaningful against CUDA figures).
    """

    def __init__(self, title: str = "Memory during training", min_interval_s: float = 0.5):
        self.fig = new_figure(title=title, xaxis_title="step", yaxis_title="GiB",
                              height=300, margin=dict(l=50, r=20, t=50, b=40))
        self.fig.add_scatter(x=[], y=[], mode="lines+markers", name="in use")
        self.fig.add_scatter(x=[], y=[], mode="lines", name="peak", line=dict(dash="dot"))
        self.fig.add_scatter(x=[], y=[], mode="lines", name="estimate (peak allocated)",
                             line=dict(dash="dash", color="#888"))
        self.steps, self.used, self.peak = [], [], []
        self.estimate_gib: float | None = None
        self.memory_kind: str | None = None
        self.throttle = Throttle(min_interval_s)
        self.widget = view(self.fig)  # what a box shows (ftlab.widgets.figures)

    def reset(self) -> None:
        self.steps, self.used, self.peak = [], [], []
        self.throttle.reset()
        self.redraw()

    def set_estimate(self, gib: float | None) -> None:
        self.estimate_gib = gib
        self.redraw()

    def __call__(self, event: dict) -> None:
        kind = event.get("kind")
        if kind == "step" and "memory_gib" in event:
            self.steps.append(event["step"])
            self.used.append(event["memory_gib"])
            self.peak.append(event.get("peak_memory_gib", event["memory_gib"]))
            if event.get("memory_kind") and event["memory_kind"] != self.memory_kind:  # a relayout: only on change
                self.memory_kind = event["memory_kind"]
                self.fig.layout.yaxis.title.text = f"GiB ({self.memory_kind})"
        self.throttle(self.redraw, force=kind in ("begin", "end"))

    def redraw(self) -> None:
        with self.fig.batch_update():
            self.fig.data[0].x, self.fig.data[0].y = _arrays(self.steps, self.used)
            self.fig.data[1].x, self.fig.data[1].y = _arrays(self.steps, self.peak)
            xs = [min(self.steps), max(self.steps)] if self.steps else [0, 1]
            e = self.estimate_gib
            self.fig.data[2].x, self.fig.data[2].y = (xs, [e, e]) if e is not None else ([], [])
        refresh(self.fig)

    def figure(self) -> go.Figure:
        return go.Figure(self.fig)


class ComparisonPlot:
    """Training loss of several runs in one plot, one trace per event["method"]; a training listener."""

    def __init__(self, title: str = "Training loss", min_interval_s: float = 0.5):
        self.fig = new_figure(title=title, xaxis_title="step", yaxis_title="loss", height=380,
                              margin=dict(l=50, r=20, t=50, b=40))
        self.series: dict[str, tuple[list, list]] = {}
        self.throttle = Throttle(min_interval_s)
        self.widget = view(self.fig)  # what a box shows (ftlab.widgets.figures)

    def __call__(self, event: dict) -> None:
        if event.get("kind") == "step":
            xs, ys = self.series.setdefault(event.get("method", "run"), ([], []))
            xs.append(event["step"])
            ys.append(event["loss"])
        self.throttle(self.redraw, force=event.get("kind") == "end")

    def redraw(self) -> None:
        with self.fig.batch_update():
            names = [t.name for t in self.fig.data]
            for name, (xs, ys) in self.series.items():
                if name not in names:
                    self.fig.add_scatter(x=[], y=[], mode="lines", name=name)
                    names.append(name)
                trace = self.fig.data[names.index(name)]
                trace.x, trace.y = _arrays(xs, ys)
        refresh(self.fig)

    def figure(self) -> go.Figure:
        return go.Figure(self.fig)


# a colour per method family, in the order of ftlab.method_table.FAMILIES (the palette repeats past its end)
FAMILY_COLORS = dict(zip(FAMILIES, cycle(("#444444", "#4c78a8", "#54a24b", "#e45756", "#f58518", "#b279a2"))))


class MethodScatter:
    """Per method: trainable % against validation loss, and seconds a step against memory, by family."""

    def __init__(self, rows):
        """rows: a pandas DataFrame indexed by method with trainable_pct, val_loss_after, seconds_per_step,
        measured_gib and family columns (ftlab.compare.compare_methods' rows)."""
        fig = make_subplots(rows=1, cols=2, subplot_titles=("trainable parameters vs validation loss",
                                                            "time a step vs memory measured"))
        self.fig = new_figure(fig)
        for family, color in FAMILY_COLORS.items():
            part = rows[rows["family"] == family]
            if part.empty:
                continue
            common = dict(mode="markers+text", text=list(part.index), textposition="top center", name=family,
                          marker=dict(color=color, size=10), legendgroup=family)
            self.fig.add_scatter(x=list(part["trainable_pct"]), y=list(part["val_loss_after"]), row=1, col=1,
                                 **common)
            self.fig.add_scatter(x=list(part["seconds_per_step"]), y=list(part["measured_gib"]), row=1, col=2,
                                 showlegend=False, **common)
        self.fig.update_xaxes(type="log", title_text="trainable parameters (%)", row=1, col=1)
        self.fig.update_yaxes(title_text="validation loss after", row=1, col=1)
        self.fig.update_xaxes(title_text="seconds a step", row=1, col=2)
        kind = rows["measured_kind"].iloc[0] if "measured_kind" in rows and len(rows) else "GiB"
        self.fig.update_yaxes(title_text=f"GiB, {kind}", row=1, col=2)
        self.fig.update_layout(height=420, margin=dict(l=50, r=20, t=60, b=40))
        self.widget = view(self.fig)  # what a box shows (ftlab.widgets.figures)

    def figure(self) -> go.Figure:
        return go.Figure(self.fig)
