"""Memory plots: the estimate's parts against the GPU's capacity (the set-up panel's bar), the estimate's parts
beside what was measured, and estimate vs measured over many runs. All are plotly FigureWidgets updated in place;
`figure()` gives each a static copy (what an HTML export shows)."""
from __future__ import annotations

import plotly.graph_objects as go

from ftlab.widgets.figures import new_figure, refresh, view

COLORS = {"weights": "#4c78a8", "adapters": "#72b7b2", "gradients": "#f58518", "optimizer": "#e45756",
          "gathered": "#8cd17d", "buckets": "#d4a6c8", "activations": "#54a24b", "logits": "#eeca3b",
          "autocast_cache": "#b279a2", "allocator": "#bab0ac", "paged_optimizer": "#ff9da6", "cuda_context": "#9d755d",
          # a CPU run's parts (ftlab.memory_cpu)
          "baseline": "#9d755d", "checkpoint": "#bcbddc", "good_weights": "#fdae6b", "optimizer_step": "#fb6a4a",
          "working_set": "#bab0ac"}


class CapacityBar:
    """One horizontal bar, the estimate stacked by part, against a dashed line at the target's capacity: what a
    set-up panel redraws on every change."""

    def __init__(self):
        self.fig = new_figure(barmode="stack", height=170, width=560, xaxis=dict(ticksuffix=" GiB"),
                              margin=dict(l=10, r=10, t=40, b=40), showlegend=True,
                              legend=dict(orientation="h", y=-0.6, font=dict(size=10)),
                              yaxis=dict(showticklabels=False))
        for name, color in COLORS.items():
            self.fig.add_bar(name=name, y=["estimate"], x=[0.0], orientation="h", marker_color=color)
        self.widget = view(self.fig)  # what a box shows (ftlab.widgets.figures)

    def update(self, estimate, capacity_gib: float | None, label: str) -> None:
        """estimate: a MemoryEstimate; capacity_gib: the GPU's memory (None: no line); label: what the capacity is
        ("H100-80GB", "each A100-80GB")."""
        parts = estimate.components
        with self.fig.batch_update():
            for trace in self.fig.data:
                value = parts.get(trace.name, 0.0)
                trace.x, trace.showlegend = [value], value >= 0.005
            top = max(estimate.total_gib, capacity_gib or 0.0) * 1.08
            self.fig.layout.xaxis.range = [0, top]
            self.fig.layout.shapes = ([dict(type="line", x0=capacity_gib, x1=capacity_gib, y0=-0.5, y1=0.5,
                                       line=dict(color="#b00020" if estimate.total_gib > capacity_gib
                                                 else "#333", dash="dash", width=2))]
                                      if capacity_gib else [])
            fits = "" if not capacity_gib else (" fits" if estimate.total_gib <= capacity_gib else " does not fit")
            self.fig.layout.title = dict(
                text=f"{estimate.total_gib:.2f} GiB"
                     + (f" of {capacity_gib:.0f} GiB ({label}):{fits}" if capacity_gib else ""), font=dict(size=13))
        refresh(self.fig)

    def figure(self) -> go.Figure:
        return go.Figure(self.fig)


class MemoryBars:
    """One stacked bar of the estimate's components; measured figures as bars beside it."""

    def __init__(self, title: str = "GPU memory: estimate by part, and measured"):
        self.fig = new_figure(title=title, barmode="stack", yaxis_title="GiB", height=380,
                              margin=dict(l=50, r=20, t=50, b=40),
                              legend=dict(traceorder="normal"))
        for name, color in COLORS.items():
            self.fig.add_bar(name=name, x=["estimate"], y=[0.0], marker_color=color)
        self.fig.add_bar(name="measured", x=[], y=[], marker_color="#222", width=0.4)
        self.widget = view(self.fig)  # what a box shows (ftlab.widgets.figures)

    def update(self, estimate, measured: dict | None = None) -> None:
        """measured: label -> GiB (e.g. {"peak allocated": 4.1, "device in use": 5.1})."""
        with self.fig.batch_update():
            for trace in self.fig.data[:-1]:
                trace.y = [estimate.components.get(trace.name, 0.0)]
            m = measured or {}
            self.fig.data[-1].x, self.fig.data[-1].y = list(m), list(m.values())
        refresh(self.fig)

    def figure(self) -> go.Figure:
        """A static copy (what an HTML export shows: a FigureWidget's own output is a widget view only)."""
        return go.Figure(self.fig)


class EstimateScatter:
    """Estimate against measured device memory, with y = x and a ±10 % band."""

    def __init__(self, title: str = "Estimated vs measured device memory (GiB)"):
        self.fig = new_figure(title=title, xaxis_title="measured (GiB)",
                              yaxis_title="estimated (GiB)", height=420,
                              margin=dict(l=50, r=20, t=50, b=40))
        self.fig.add_scatter(x=[], y=[], mode="lines", name="±10 %", line=dict(width=0), showlegend=False)
        self.fig.add_scatter(x=[], y=[], mode="lines", name="±10 %", fill="tonexty", line=dict(width=0),
                             fillcolor="rgba(120,120,120,0.2)")
        self.fig.add_scatter(x=[], y=[], mode="lines", name="y = x", line=dict(color="#444", dash="dash"))
        self.groups: dict[str, int] = {}
        self.widget = view(self.fig)  # what a box shows (ftlab.widgets.figures)

    def add(self, group: str, measured: list[float], estimated: list[float], labels: list[str]) -> None:
        with self.fig.batch_update():
            if group not in self.groups:
                self.fig.add_scatter(x=[], y=[], mode="markers", name=group, text=[], hoverinfo="text+x+y")
                self.groups[group] = len(self.fig.data) - 1
            t = self.fig.data[self.groups[group]]
            xs = list(t.x) + list(measured)
            t.x, t.y, t.text = xs, list(t.y) + list(estimated), list(t.text) + list(labels)
            others = [max(d.x or [0]) for i, d in enumerate(self.fig.data[3:], 3) if i != self.groups[group]]
            top = max([max(xs)] + others) * 1.05
            self.fig.data[0].x, self.fig.data[0].y = [0, top], [0, 0.9 * top]
            self.fig.data[1].x, self.fig.data[1].y = [0, top], [0, 1.1 * top]
            self.fig.data[2].x, self.fig.data[2].y = [0, top], [0, top]
        refresh(self.fig)

    def figure(self) -> go.Figure:
        return go.Figure(self.fig)
