"""Static figures (Colab's fallback): every plot becomes a go.Figure drawn into an ipywidgets Output and redrawn
after each update, so a cell never stays blank where plotly's widget inside a box does not render."""
import base64
import sys
import types

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go
import pytest

from ftlab.config import TrainConfig
from ftlab.errors import ConfigError
from ftlab.widgets import ConfigPanel, LossPlot, MemoryBars, figures, setup_notebook


@pytest.fixture
def static():
    figures.static_figures(True)
    try:
        yield
    finally:
        figures.static_figures(False)


def drawn(out: W.Output) -> dict:
    """The plotly figure (as JSON) last drawn in an Output."""
    assert isinstance(out, W.Output) and len(out.outputs) == 1
    return out.outputs[0]["data"]["application/vnd.plotly.v1+json"]


def values(array) -> list:
    """A trace's values as sent: a list, or numpy's typed array ({"dtype", "bdata": base64})."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def test_a_live_plot_is_redrawn_into_its_output_after_each_update(static):
    plot = LossPlot(min_interval_s=0)
    assert isinstance(plot.fig, go.Figure) and not isinstance(plot.fig, go.FigureWidget)
    assert values(drawn(plot.widget)["data"][0].get("x", [])) == []
    plot({"kind": "step", "step": 1, "loss": 3.0})
    plot({"kind": "step", "step": 2, "loss": 2.5})
    trace = drawn(plot.widget)["data"][0]
    assert values(trace["x"]) == [1, 2] and values(trace["y"]) == [3.0, 2.5]
    assert list(plot.figure().data[0].y) == [3.0, 2.5]  # the static copy a lab shows under papermill is the same


def test_the_panel_bar_and_data_histogram_are_outputs_redrawn_on_change(static, tokenizer, tmp_path):
    panel = ConfigPanel(TrainConfig(gpu="T4"))
    before = drawn(panel.bar.widget)["layout"]["title"]["text"]
    panel.fields["batch_size"].value = 64
    after = drawn(panel.bar.widget)["layout"]["title"]["text"]
    assert before != after and "does not fit" in after
    assert panel.bar.widget in panel.widget.children[4].children  # the Output is what the panel's box holds
    bars = MemoryBars()
    bars.update(panel.estimate, {"peak allocated": 1.5})
    assert values(drawn(bars.widget)["data"][-1]["y"]) == [1.5]
    from ftlab.widgets import DataPanel
    (tmp_path / "d.jsonl").write_text('{"prompt": "a b c", "completion": "d"}\n' * 12)
    data = DataPanel(tokenizer, path=str(tmp_path / "d.jsonl"), seq_len=64)
    out = [w for w in data.widget.children if isinstance(w, W.Output)][0]
    assert sum(values(drawn(out)["data"][0]["y"])) == 12


def test_setup_notebook_turns_static_figures_on_on_colab_and_on_request(monkeypatch):
    google, colab = types.ModuleType("google"), types.ModuleType("google.colab")
    colab.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: None)
    google.colab = colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    import plotly.io as pio
    before = pio.renderers.default
    try:
        setup_notebook()
        assert figures.static_figures() and isinstance(LossPlot().widget, W.Output)
        setup_notebook(static_figures=False)  # live figures chosen on Colab
        assert not figures.static_figures() and isinstance(LossPlot().widget, go.FigureWidget)
        monkeypatch.delitem(sys.modules, "google.colab")
        setup_notebook(static_figures=True)  # anywhere else, on request
        assert figures.static_figures()
        with pytest.raises(ConfigError, match="static_figures="):
            setup_notebook(static_figures="yes")
        setup_notebook()  # not on Colab: live figures
        assert not figures.static_figures()
    finally:
        figures.static_figures(False)
        pio.renderers.default = before
