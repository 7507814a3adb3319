"""ftlab's notebook UI: views over ftlab's core (which never imports this package)."""
from ftlab.widgets.panel import ConfigPanel
from ftlab.widgets.memory_plots import EstimateScatter, MemoryBars
from ftlab.widgets.plots import LossPlot, TrainingProgress, setup_notebook

__all__ = ["ConfigPanel", "EstimateScatter", "MemoryBars", "LossPlot", "TrainingProgress", "setup_notebook"]
