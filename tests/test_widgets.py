from ftlab.config import TrainConfig
from ftlab.widgets import ConfigPanel, LossPlot, TrainingProgress
from ftlab.train import TrainResult


def test_panel_is_built_from_the_parameters_and_edits_the_config():
    cfg = TrainConfig(lora_r=16, method="dora", bits=8, seq_len=128)
    panel = ConfigPanel(cfg)
    assert panel.config == cfg
    assert panel.fields["lora_r"].value == 16 and panel.fields["bits"].value == 8
    panel.fields["lora_r"].value = 64
    panel.fields["method"].value = "ia3"
    assert panel.config.lora_r == 64 and panel.config.method == "ia3"
    assert "128" in panel.summary.value


def test_invalid_value_shows_inline_and_keeps_the_last_valid_config():
    panel = ConfigPanel(TrainConfig())
    panel.fields["batch_size"].value = 0
    assert "batch_size" in panel.message.value and "integer from 1" in panel.message.value
    assert panel.config.batch_size == 4 and panel.error.field == "batch_size"
    panel.fields["batch_size"].value = 2
    assert panel.message.value == "" and panel.config.batch_size == 2


def test_loss_plot_and_progress_update_in_place():
    plot, prog = LossPlot(min_interval_s=0), TrainingProgress()
    widget = plot.widget
    for ev in [{"kind": "begin", "max_steps": 2},
               {"kind": "step", "step": 1, "max_steps": 2, "loss": 3.0, "tokens_per_s": 10.0},
               {"kind": "step", "step": 2, "max_steps": 2, "loss": 2.0, "tokens_per_s": 10.0},
               {"kind": "eval", "step": 2, "eval_loss": 2.5}]:
        plot(ev)
        prog(ev)
    assert plot.widget is widget and list(widget.data[0].y) == [3.0, 2.0] and list(widget.data[1].y) == [2.5]
    assert prog.bar.value == 2 and "loss 2.000" in prog.label.value
    prog({"kind": "end", "result": TrainResult(steps=2, losses=[(1, 3.0), (2, 2.0)], seconds=1.0)})
    assert "done" in prog.label.value
    assert len(plot.figure().data) == 2
