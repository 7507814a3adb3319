"""Figures that render wherever the notebook runs.

ftlab's plots are plotly FigureWidgets updated in place. Where a plotly widget inside an ipywidgets box shows
a blank cell (Colab: googlecolab/colabtools#5889, "Plotly is not defined" in the browser's console, open in
2026; also any front end without plotly's widget renderer), the same plots are plain `go.Figure`s instead, each
shown in an ipywidgets Output that is redrawn with a static copy after every update: the same traces, the same
throttling, no live widget. `setup_notebook()` turns that on on Colab (`static_figures=False` keeps live ones);
`static_figures(True)` does anywhere.

A plot class makes its figure with `new_figure(...)`, puts `view(fig)` in its boxes (its `.widget`) and calls
`refresh(fig)` after each update; with live figures `view` is the figure itself and `refresh` does nothing.
"""
from __future__ import annotations

import ipywidgets as W
import plotly.graph_objects as go
import plotly.io as pio

from ftlab.errors import ConfigError

_STATIC = [False]


def static_figures(on: bool | None = None) -> bool:
    """Whether new plots are static figures redrawn in an Output (True) or live FigureWidgets (False); `on` sets
    it (for plots made after the call)."""
    if on is not None:
        if not isinstance(on, bool):

            raise ConfigError("static_figures", on, "True (static figures redrawn after each update) or False "
                              "(live plotly FigureWidgets)")
        _STATIC[0] = on
    return _STATIC[0]


def new_figure(figure=None, **layout):
    """A FigureWidget, or a go.Figure in static mode; `figure`: one to copy (e.g. from make_subplots)."""
    kind = go.Figure if _STATIC[0] else go.FigureWidget
    return kind(figure) if figure is not None else kind(layout=layout)


def view(fig) -> W.Widget:
    """What a box holds for `fig`: the FigureWidget itself, or the Output a static figure is drawn in."""
    if isinstance(fig, go.FigureWidget):
        return fig
    out = getattr(fig, "_ftlab_view", None)
    if out is None:
        out = W.Output()
        object.__setattr__(fig, "_ftlab_view", out)
        refresh(fig)
    return out


def refresh(fig) -> None:
    """Draw a static figure's current state into its Output (one message; safe from the training thread, which
    `with out:` is not). Nothing for a FigureWidget, which updated itself."""
    out = getattr(fig, "_ftlab_view", None)
    if out is None or isinstance(fig, go.FigureWidget):
        return
    copy = go.Figure(fig)
    # the bundle the notebook's renderers make (setup_notebook: plotly's mimetype and HTML, or Colab's); plotly's
    # own mimetype where the default renderer makes none (a browser renderer outside a notebook)
    data = copy._repr_mimebundle_() or pio.renderers["plotly_mimetype"].to_mimebundle(copy.to_dict())
    out.outputs = ({"output_type": "display_data", "data": data, "metadata": {}},)
