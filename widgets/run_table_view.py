"""The runs of a folder (ftlab.run_table.runs_table) in one static plotly figure: loss before → after each run,
and memory estimated beside measured. A plain go.Figure, so it shows in an HTML export too."""
from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ftlab.errors import ConfigError
from ftlab.run_table import COLUMNS


def runs_figure(table):
    """One static plotly figure (a go.Figure) comparing the runs of runs_table(root): left, each run's loss
    before and after training (validation loss where the run had held-out data, else the first and last
    training loss); right, each run's memory, estimated beside measured (hover for the kind of each). An empty
    table gives a figure that says so."""
    if not isinstance(table, pd.DataFrame) or not set(COLUMNS) <= set(table.columns):
        raise ConfigError("table", type(table).__name__, "the DataFrame runs_table(root) returns")
    if table.empty:
        return _message(go.Figure(), "No runs to compare: the folder holds no run.json or results.json yet")
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("loss before → after training", "memory (GiB): estimated and measured"))
    for _, r in table.iterrows():
        pairs = {"validation": (r.val_loss_before, r.val_loss_after), "training": (r.train_loss_first,
                                                                                   r.train_loss_last)}
        which = next((k for k, (b, a) in pairs.items() if not (math.isnan(b) or math.isnan(a))), None)
        if which:
            fig.add_trace(go.Scatter(x=["before", "after"], y=list(pairs[which]), mode="lines+markers",
                                     name=f"{r.folder} ({which})", legendgroup="loss",
                                     hovertemplate=f"{r.folder}<br>{which} loss %{{x}}: %{{y:.3f}}<extra></extra>"),
                          row=1, col=1)
    for side, color in (("estimated", "#9ecae1"), ("measured", "#3182bd")):
        kinds = [k if isinstance(k, str) else "" for k in table[f"memory_{side}_kind"]]
        fig.add_trace(go.Bar(x=table["folder"], y=table[f"memory_{side}_gib"], name=f"memory {side}",
                             marker_color=color, hovertext=kinds,
                             hovertemplate="%{x}: %{y:.2f} GiB<br>%{hovertext}<extra>" + side + "</extra>"),
                      row=1, col=2)
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_yaxes(title_text="GiB", row=1, col=2)
    fig.update_layout(title=f"{len(table)} run(s) compared", barmode="group", template="plotly_white", height=450)
    if not any(t.type == "scatter" for t in fig.data) and table[["memory_estimated_gib",
                                                                 "memory_measured_gib"]].isna().all().all():
        _message(fig, "The runs found hold no loss and no memory figure to draw (see the table's note column)")
    return fig


def _message(fig, text: str):
    fig.add_annotation(text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font={"size": 14})
    fig.update_layout(template="plotly_white", height=300)
    return fig
