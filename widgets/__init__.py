"""ftlab's notebook UI: views over ftlab's core (which never imports this package)."""
from ftlab.widgets import figures
from ftlab.widgets.panel import ConfigPanel
from ftlab.widgets.classifier_panel import ClassifierPanel
from ftlab.widgets.data_panel import DataPanel
from ftlab.widgets.memory_plots import EstimateScatter, MemoryBars
from ftlab.widgets.playground import Playground
from ftlab.widgets.plots import (ComparisonPlot, LossPlot, MemoryPlot, MethodScatter, TrainingProgress,
                                 setup_notebook)
from ftlab.widgets.run import NotFinished, RunControls
from ftlab.widgets.run_table_view import runs_figure

__all__ = ["ClassifierPanel", "ComparisonPlot", "ConfigPanel", "DataPanel", "EstimateScatter", "LossPlot", "MemoryBars", "MemoryPlot",
           "MethodScatter", "NotFinished", "Playground", "RunControls", "TrainingProgress", "figures", "runs_figure",
           "setup_notebook"]
