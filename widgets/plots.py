"""Live plots: plotly FigureWidgets updated in place (never rebuilt), throttled so plotting stays cheap."""
from __future__ import annotations

import time

import ipywidgets as W
import plotly.graph_objects as go
import plotly.io as pio


def setup_notebook() -> None:
    """Plotly output that renders in JupyterLab and in nbconvert's HTML offline (plotly.js embedded), and
    no "Loading weights" progress bar from transformers each time a lab loads a model (a lab loads several;
    the bars filled the notebook with empty widgets)."""
    pio.renderers.default = "plotly_mimetype+notebook"
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()


class LossPlot:
    """Train loss per step and validation loss as they arrive; a training listener (`plot(event)`).

    Redraws at most every `min_interval_s` seconds (a redraw sends the whole trace to the browser),
    and always on eval and end events, so the plot never slows training measurably.
    """

    def __init__(self, title: str = "Training loss", min_interval_s: float = 0.5):
        self.widget = go.FigureWidget(layout=dict(title=title, xaxis_title="step", yaxis_title="loss",
                                                  height=320, margin=dict(l=50, r=20, t=50, b=40)))
        self.widget.add_scatter(x=[], y=[], mode="lines+markers", name="train")
        self.widget.add_scatter(x=[], y=[], mode="lines+markers", name="validation")
        self.steps, self.losses, self.eval_steps, self.eval_losses = [], [], [], []
        self.min_interval_s = min_interval_s
        self._last_draw = 0.0

    def __call__(self, event: dict) -> None:
        kind = event.get("kind")
        if kind == "step":
            self.steps.append(event["step"])
            self.losses.append(event["loss"])
        elif kind == "eval":
            self.eval_steps.append(event["step"])
            self.eval_losses.append(event["eval_loss"])
        now = time.perf_counter()
        if kind in ("eval", "end") or now - self._last_draw >= self.min_interval_s:
            self.redraw()
            self._last_draw = now

    def reset(self) -> None:
        self.steps, self.losses, self.eval_steps, self.eval_losses = [], [], [], []
        self.redraw()

    def redraw(self) -> None:
        with self.widget.batch_update():
            self.widget.data[0].x, self.widget.data[0].y = list(self.steps), list(self.losses)
            self.widget.data[1].x, self.widget.data[1].y = list(self.eval_steps), list(self.eval_losses)

    def figure(self) -> go.Figure:
        """A static copy (for exported HTML, where widget views don't render)."""
        return go.Figure(self.widget)


class TrainingProgress:
    """A progress bar with step, loss and throughput; a training listener."""

    def __init__(self):
        self.bar = W.IntProgress(value=0, min=0, max=1, description="step", bar_style="info",
                                 layout=W.Layout(width="60%"))
        self.label = W.HTML("waiting to start")
        self.widget = W.HBox([self.bar, self.label])

    def __call__(self, event: dict) -> None:
        if event.get("kind") == "begin":
            self.bar.max = max(event["max_steps"], 1)
        elif event.get("kind") == "step":
            self.bar.value = event["step"]
            self.label.value = (f"{event['step']}/{event['max_steps']} · loss {event['loss']:.3f} · "
                                f"{event['tokens_per_s']:.0f} tokens/s")
        elif event.get("kind") == "end":
            res = event["result"]
            self.bar.bar_style = "warning" if res.stopped else "success"
            self.label.value = (f"{'stopped' if res.stopped else 'done'}: {res.steps} steps in {res.seconds:.0f} s "
                                f"· last loss {res.last_loss:.3f}")


class MemoryPlot:
    """Memory in use at each step (CUDA: allocated and peak; CPU: process RSS), beside the estimate.

    A training listener like LossPlot, throttled the same way. `estimate_gib` draws the calculator's
    peak-allocated estimate as a dashed line (only meaningful against CUDA figures).
    """

    def __init__(self, title: str = "Memory during training", min_interval_s: float = 0.5):
        self.widget = go.FigureWidget(layout=dict(title=title, xaxis_title="step", yaxis_title="GiB",
                                                  height=300, margin=dict(l=50, r=20, t=50, b=40)))
        self.widget.add_scatter(x=[], y=[], mode="lines+markers", name="in use")
        self.widget.add_scatter(x=[], y=[], mode="lines", name="peak", line=dict(dash="dot"))
        self.widget.add_scatter(x=[], y=[], mode="lines", name="estimate (peak allocated)",
                                line=dict(dash="dash", color="#888"))
        self.steps, self.used, self.peak = [], [], []
        self.estimate_gib: float | None = None
        self.min_interval_s = min_interval_s
        self._last_draw = 0.0

    def reset(self) -> None:
        self.steps, self.used, self.peak = [], [], []
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
            if event.get("memory_kind"):
                self.widget.layout.yaxis.title.text = f"GiB ({event['memory_kind']})"
        now = time.perf_counter()
        if kind in ("begin", "end") or now - self._last_draw >= self.min_interval_s:
            self.redraw()
            self._last_draw = now

    def redraw(self) -> None:
        with self.widget.batch_update():
            self.widget.data[0].x, self.widget.data[0].y = list(self.steps), list(self.used)
            self.widget.data[1].x, self.widget.data[1].y = list(self.steps), list(self.peak)
            xs = [min(self.steps), max(self.steps)] if self.steps else [0, 1]
            e = self.estimate_gib
            self.widget.data[2].x, self.widget.data[2].y = (xs, [e, e]) if e is not None else ([], [])

    def figure(self) -> go.Figure:
        return go.Figure(self.widget)


class ComparisonPlot:
    """Training loss of several runs in one plot, one trace per event["method"]; a training listener."""

    def __init__(self, title: str = "Training loss", min_interval_s: float = 0.5):
        self.widget = go.FigureWidget(layout=dict(title=title, xaxis_title="step", yaxis_title="loss", height=380,
                                                  margin=dict(l=50, r=20, t=50, b=40)))
        self.series: dict[str, tuple[list, list]] = {}
        self.min_interval_s = min_interval_s
        self._last_draw = 0.0

    def __call__(self, event: dict) -> None:
        if event.get("kind") == "step":
            xs, ys = self.series.setdefault(event.get("method", "run"), ([], []))
            xs.append(event["step"])
            ys.append(event["loss"])
        now = time.perf_counter()
        if event.get("kind") == "end" or now - self._last_draw >= self.min_interval_s:
            self.redraw()
            self._last_draw = now

    def redraw(self) -> None:
        with self.widget.batch_update():
            names = [t.name for t in self.widget.data]
            for name, (xs, ys) in self.series.items():
                if name not in names:
                    self.widget.add_scatter(x=[], y=[], mode="lines", name=name)
                    names.append(name)
                trace = self.widget.data[names.index(name)]
                trace.x, trace.y = list(xs), list(ys)

    def figure(self) -> go.Figure:
        return go.Figure(self.widget)


FAMILY_COLORS = {"full": "#444444", "additive": "#4c78a8", "selective": "#54a24b", "reparameterisation": "#e45756"}


class MethodScatter:
    """Per method: trainable % against validation loss, and seconds a step against memory, by family."""

    def __init__(self, rows):
        """rows: a pandas DataFrame indexed by method with trainable_pct, val_loss_after, seconds_per_step,
        measured_gib and family columns (ftlab.compare.compare_methods' rows)."""
        from plotly.subplots import make_subplots
        fig = make_subplots(rows=1, cols=2, subplot_titles=("trainable parameters vs validation loss",
                                                            "time a step vs memory measured"))
        self.widget = go.FigureWidget(fig)
        for family, color in FAMILY_COLORS.items():
            part = rows[rows["family"] == family]
            if part.empty:
                continue
            common = dict(mode="markers+text", text=list(part.index), textposition="top center", name=family,
                          marker=dict(color=color, size=10), legendgroup=family)
            self.widget.add_scatter(x=list(part["trainable_pct"]), y=list(part["val_loss_after"]), row=1, col=1, **common)
            self.widget.add_scatter(x=list(part["seconds_per_step"]), y=list(part["measured_gib"]), row=1, col=2,
                                    showlegend=False, **common)
        self.widget.update_xaxes(type="log", title_text="trainable parameters (%)", row=1, col=1)
        self.widget.update_yaxes(title_text="validation loss after", row=1, col=1)
        self.widget.update_xaxes(title_text="seconds a step", row=1, col=2)
        kind = rows["measured_kind"].iloc[0] if "measured_kind" in rows and len(rows) else "GiB"
        self.widget.update_yaxes(title_text=f"GiB, {kind}", row=1, col=2)
        self.widget.update_layout(height=420, margin=dict(l=50, r=20, t=60, b=40))

    def figure(self) -> go.Figure:
        return go.Figure(self.widget)
