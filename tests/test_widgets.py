import sys
from pathlib import Path

from ftlab.config import TrainConfig
from ftlab.widgets import ConfigPanel, LossPlot, TrainingProgress
from ftlab.report import TrainResult


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
    result = TrainResult(steps=2, losses=[(1, 3.0), (2, 2.0)], seconds=1.0)
    prog({"kind": "end", "result": result})  # the trainer's last step: evaluation and saving may follow
    assert prog.label.value.startswith("trained: 2 steps") and "done" not in prog.label.value
    prog({"kind": "finished", "result": result})  # a Run's target returned: now the run is done
    assert prog.label.value.startswith("done: 2 steps")
    assert len(plot.figure().data) == 2


def test_estimate_readout_follows_the_panel():
    seen = []
    panel = ConfigPanel(TrainConfig(model="llama-3.1-8b", method="lora", gpu="T4", seq_len=512))
    panel.on_change(lambda cfg, est: seen.append(est.total_gib))
    assert "does not fit" in panel.estimate_readout.value
    before = panel.estimate.total_gib
    panel.fields["method"].value = "qlora"
    panel.fields["bits"].value = 4
    panel.fields["gradient_checkpointing"].value = True
    assert panel.estimate.total_gib < before / 2 and "fits on T4" in panel.estimate_readout.value
    panel.fields["lora_r"].value = 256
    assert len(seen) >= 3 and seen[-1] > seen[-2]


def test_memory_plots_update_in_place():
    from ftlab.memory import estimate_memory
    from ftlab.widgets import EstimateScatter, MemoryBars
    bars, scatter = MemoryBars(), EstimateScatter()
    w1, w2 = bars.widget, scatter.widget
    e = estimate_memory("qwen2.5-0.5b-instruct")
    bars.update(e, {"peak allocated": 4.1, "device in use": 5.1})
    assert sum(t.y[0] for t in bars.widget.data[:-1]) == e.total_gib or abs(sum(t.y[0] for t in bars.widget.data[:-1]) - e.total_gib) < 1e-9
    assert list(bars.widget.data[-1].y) == [4.1, 5.1]
    scatter.add("H100", [5.0, 10.0], [5.2, 9.5], ["a", "b"])
    scatter.add("H100", [20.0], [21.0], ["c"])
    assert bars.widget is w1 and scatter.widget is w2
    assert list(scatter.widget.data[-1].x) == [5.0, 10.0, 20.0] and scatter.widget.data[2].x[1] == 21.0


def test_run_controls_train_in_the_background_and_stop(tiny_model, tokenizer, tmp_path):
    import threading
    from ftlab.data import load_records, to_prompt_completion
    from ftlab.train import finetune
    from ftlab.widgets import NotFinished, RunControls
    panel = ConfigPanel(TrainConfig(max_steps=200, batch_size=2, seq_len=64, output_dir=str(tmp_path)))
    data = to_prompt_completion(load_records("definitions", "train", n=8))
    two_steps = threading.Event()
    controls = RunControls(panel, lambda cfg, cb: finetune(cfg, data, model=tiny_model, tokenizer=tokenizer,
                                                            callback=cb),
                           listeners=[lambda e: e["kind"] == "step" and e["step"] >= 2 and two_steps.set()])
    try:
        controls.require_result()
        raise AssertionError("require_result before any run must raise NotFinished")
    except NotFinished as e:
        assert "press Run" in str(e) and e._render_traceback_() == [f"⏳ {e}"]
    controls.run_button.click()  # as a person would: the click starts a background run
    assert controls.run_button.disabled and not controls.stop_button.disabled
    assert two_steps.wait(120)
    controls.stop_button.click()
    result = controls.current.wait(120)
    assert result.stopped and "stopped at step" in controls.status.value
    assert not controls.run_button.disabled and controls.stop_button.disabled
    controls.loss_plot.redraw()
    assert list(controls.loss_plot.widget.data[0].x)[:2] == [1, 2]
    import torch
    assert list(controls.memory_plot.widget.data[0].y)
    # the dashed estimate line is GPU memory: drawn beside CUDA figures only, never beside a CPU's RSS
    assert bool(controls.memory_plot.widget.data[2].y) == torch.cuda.is_available()
    res, model = controls.require_result()
    assert res is result


def test_run_is_refused_inline_while_the_panel_shows_an_error():
    from ftlab.widgets import RunControls
    panel = ConfigPanel(TrainConfig())
    calls = []
    controls = RunControls(panel, lambda cfg, cb: calls.append(cfg))
    panel.fields["learning_rate"].value = -1.0
    assert controls.run() is None and not calls
    assert "learning_rate" in controls.status.value and "Fix" in controls.status.value


def test_panel_checks_what_needs_the_model(monkeypatch):
    panel = ConfigPanel(TrainConfig(model="smollm2-135m-instruct"))
    panel.fields["lora_targets"].value = "c_attn,q_proj"
    assert panel.error.field == "lora_targets" and "c_attn" in panel.message.value and "q_proj" in panel.message.value
    panel.fields["lora_targets"].value = "q_proj,v_proj"
    assert panel.error is None and panel.config.lora_targets == ["q_proj", "v_proj"]
    panel.fields["lora_r"].value = 256  # SmolLM2's k/v projections are 192 wide
    assert panel.error.field == "lora_r" and "at most 192" in panel.message.value
    panel.fields["lora_r"].value = 8
    panel.fields["method"].value = "bitfit"
    assert panel.error.field == "method" and "ln_tuning" in panel.message.value
    panel.fields["method"].value = "qlora"   # needs bits=4: the message names bits until it is set
    assert panel.error.field == "bits"
    import ftlab.quant
    monkeypatch.setattr(ftlab.quant, "bitsandbytes_available", lambda: (False, "no GPU backend for bitsandbytes here"))
    panel.fields["bits"].value = 4
    assert panel.error.field == "bits" and "no GPU backend" in panel.message.value
    monkeypatch.undo()
    panel.fields["bits"].value = 16
    panel.fields["bits"].value = 4
    assert panel.error is None and panel.config.method == "qlora" and panel.config.bits == 4


def test_panel_shows_only_the_chosen_methods_fields_and_keeps_the_hidden_values():
    from ftlab.methods import METHOD_KNOBS, METHODS
    panel = ConfigPanel(TrainConfig(method="lora", lora_r=16, num_virtual_tokens=12))
    assert all(set(m.knobs) <= set(METHOD_KNOBS) for m in METHODS.values()) and set(METHOD_KNOBS) <= set(panel.fields)

    def shown():
        return {n for n, w in panel.fields.items() if w.layout.display != "none"}
    assert {"lora_r", "lora_alpha", "lora_targets"} <= shown()
    assert not {"num_virtual_tokens", "adapter_size", "top_k_layers", "quant_type", "double_quant"} & shown()
    assert len({id(w.layout) for w in panel.fields.values()}) == len(panel.fields)  # hiding one hides no other
    panel.fields["method"].value = "prompt_tuning"
    assert "num_virtual_tokens" in shown() and not {"lora_r", "lora_alpha", "lora_targets"} & shown()
    assert "a usual learning rate for prompt_tuning: 0.03" in panel.summary.value
    assert panel.config.lora_r == 16 and panel.config.num_virtual_tokens == 12
    panel.fields["method"].value = "top_k"
    assert "top_k_layers" in shown() and "num_virtual_tokens" not in shown()
    panel.fields["method"].value = "adapter"
    assert "adapter_size" in shown() and "top_k_layers" not in shown()
    panel.fields["method"].value = "lora"
    panel.fields["bits"].value = 4
    assert {"quant_type", "double_quant", "lora_r"} <= shown()
    panel.fields["bits"].value = 16
    panel.fields["lora_alpha"].value = -1.0        # an error in a field the next method hides ...
    panel.fields["method"].value = "ia3"
    assert panel.error.field == "lora_alpha" and "lora_alpha" in shown()   # ... keeps it in view until fixed
    panel.fields["lora_alpha"].value = 16.0
    assert panel.error is None and "lora_alpha" not in shown() and panel.config.method == "ia3"


def test_throttle_keeps_even_slow_redraws_to_a_small_share_of_training():
    from ftlab.widgets.plots import Throttle
    clock, draws = [0.0], []

    def redraw(cost):
        draws.append(clock[0])
        clock[0] += cost

    t = Throttle(0.5, share=0.01, clock=lambda: clock[0])
    for _ in range(1000):              # 10 s of 10-ms steps, each redraw taking 20 ms
        t(lambda: redraw(0.02))
        clock[0] += 0.01
    assert abs(t.interval - 0.02 / 0.01) < 1e-9 and 0.02 * (len(draws) - 1) / clock[0] <= 0.01  # the first draw is free
    assert all(b - a >= 1.999 for a, b in zip(draws, draws[1:]))
    n = len(draws)
    t(lambda: redraw(0.0), force=True)  # eval and end events always draw
    assert len(draws) == n + 1
    t0, every = Throttle(0, clock=lambda: clock[0]), []
    for _ in range(5):
        t0(lambda: every.append(1))
    assert len(every) == 5               # min_interval_s=0: every event


def test_live_plots_send_arrays_and_relayout_only_on_change():
    import numpy as np
    from ftlab.widgets import MemoryPlot
    plot, relayouts = MemoryPlot(min_interval_s=0), []
    plot.widget._send_relayout_msg = lambda *a, **k: relayouts.append(a)
    for s in range(1, 4):
        plot({"kind": "step", "step": s, "memory_gib": 1.0, "peak_memory_gib": 1.5, "memory_kind": "cuda allocated"})
    assert len(relayouts) == 1 and plot.widget.layout.yaxis.title.text == "GiB (cuda allocated)"
    # numpy arrays go to the browser as binary buffers: a redraw costs about the same at any length
    assert isinstance(plot.widget.data[0].y, np.ndarray) and list(plot.widget.data[1].y) == [1.5, 1.5, 1.5]


# --- the hardware group: GPUs, machines, strategy, offloading (panel.layout), per-GPU readout, launch files ----

def _shown(panel) -> set:
    return {n for n, w in {**panel.fields, **panel.hardware}.items() if w.layout.display != "none"}


def _readout_gib(panel) -> float:
    import re
    return float(re.search(r"Estimated GPU memory(?: per GPU)?: ([0-9.]+) GiB", panel.estimate_readout.value)[1])


def test_hardware_fields_show_with_several_gpus_or_a_strategy():
    from ftlab.layout import Layout
    panel = ConfigPanel(TrainConfig())
    assert panel.layout == Layout() and panel.fields["gpu"].description == "GPU type"
    assert {"gpu", "num_gpus", "num_machines"} <= _shown(panel)
    assert not {"strategy", "offload_optimizer", "offload_params"} & _shown(panel)   # one plain GPU
    assert "main address" not in [w.description for w in panel.export.widget.children
                                  if w.layout.display != "none" and hasattr(w, "description")]
    panel.hardware["num_gpus"].value = 2
    assert panel.layout == Layout(num_gpus=2) and "strategy" in _shown(panel)
    assert not {"offload_optimizer", "offload_params"} & _shown(panel)               # ddp cannot offload
    assert dict(panel.hardware["strategy"].options)["ZeRO-3"] == "zero3"              # readable labels
    panel.hardware["strategy"].value = "zero2"                                       # the optimizer only
    assert "offload_optimizer" in _shown(panel) and "offload_params" not in _shown(panel)
    panel.hardware["strategy"].value = "zero3"
    assert {"offload_optimizer", "offload_params"} <= _shown(panel)
    panel.hardware["strategy"].value = "fsdp"                                        # FSDP offloads all together
    assert "offload_params" in _shown(panel) and "offload_optimizer" not in _shown(panel)
    panel.hardware["num_gpus"].value = 1                                             # a strategy chosen: still shown
    assert "strategy" in _shown(panel) and panel.layout == Layout(strategy="fsdp")
    panel.hardware["num_machines"].value = 2
    assert panel.export.main_address.layout.display is None and panel.layout.world == 2
    panel.hardware["num_machines"].value = 1
    assert panel.export.main_address.layout.display == "none"


def test_bad_layout_is_shown_inline_and_keeps_the_last_valid_layout(monkeypatch):
    import ftlab.quant
    from ftlab.errors import ConfigError
    from ftlab.layout import Layout
    monkeypatch.setattr(ftlab.quant, "bitsandbytes_available", lambda: (True, ""))
    panel = ConfigPanel(TrainConfig(), num_gpus=2, strategy="zero3")
    panel.hardware["offload_params"].value = True
    good = Layout(num_gpus=2, strategy="zero3", offload_params=True)
    assert panel.error is None and panel.layout == good
    panel.hardware["strategy"].value = "zero2"                      # zero2 does not split the weights
    assert panel.error.field == "offload_params" and "offload_params" in panel.message.value
    assert "zero2" in panel.message.value and panel.layout == good
    assert "offload_params" in _shown(panel)                       # hidden under zero2, but in error: shown
    panel.hardware["offload_params"].value = False
    assert panel.error is None and panel.layout == Layout(num_gpus=2, strategy="zero2")
    assert "offload_params" not in _shown(panel)
    panel.fields["bits"].value = 8
    panel.hardware["strategy"].value = "fsdp"                       # int8 weights cannot be sharded
    assert panel.error.field == "strategy" and "8-bit" in panel.message.value
    assert panel.layout.strategy == "zero2" and panel.config.bits == 8
    panel.hardware["strategy"].value = "ddp"
    panel.hardware["num_gpus"].value = 0
    assert panel.error.field == "num_gpus" and "num_gpus" in panel.message.value and panel.layout.num_gpus == 2
    panel.hardware["num_gpus"].value = 4
    assert panel.error is None and panel.layout == Layout(num_gpus=4)
    try:
        ConfigPanel(TrainConfig(bits=8), num_gpus=2, strategy="zero3")   # a lab's parameters are checked too
        raise AssertionError("an 8-bit base with zero3 must raise")
    except ConfigError as e:
        assert e.field == "strategy"


def test_readout_is_per_gpu_and_equals_the_calculator():
    from ftlab.memory import estimate_memory
    cfg = TrainConfig(model="llama-3.1-8b", method="full", gpu="A100-80GB", seq_len=512, batch_size=4)
    panel = ConfigPanel(cfg)
    assert "per GPU" not in panel.estimate_readout.value and "effective batch" not in panel.estimate_readout.value
    assert "Run trains here" not in panel.estimate_readout.value
    assert abs(_readout_gib(panel) - estimate_memory(cfg).total_gib) < 0.006
    panel.hardware["num_gpus"].value = 2
    panel.hardware["strategy"].value = "zero3"
    layout = dict(num_gpus=2, strategy="zero3", offload_optimizer=False, offload_params=False, num_machines=1)
    per_gpu = estimate_memory(cfg, **layout)
    assert per_gpu.total_gib != estimate_memory(cfg).total_gib and panel.estimate.total_gib == per_gpu.total_gib
    assert "per GPU" in panel.estimate_readout.value and abs(_readout_gib(panel) - per_gpu.total_gib) < 0.006
    assert "effective batch 4 × 2 GPUs = 8 sequences a step" in panel.estimate_readout.value
    assert "Run trains here, in one process" in panel.estimate_readout.value
    assert "CPU memory a machine:" not in panel.estimate_readout.value and "on each GPU" in panel.summary.value
    panel.hardware["offload_optimizer"].value = True
    off = estimate_memory(cfg, **{**layout, "offload_optimizer": True})
    assert abs(_readout_gib(panel) - off.total_gib) < 0.006 and off.cpu_gib > 0
    assert f"CPU memory a machine: {off.cpu_gib:.1f} GiB" in panel.estimate_readout.value
    panel.hardware["num_machines"].value = 3
    assert "effective batch 4 × 2 GPUs × 3 machines = 24 sequences a step" in panel.estimate_readout.value


def test_readout_hints_the_cheapest_layout_that_fits():
    from ftlab.scale_out import cheapest_fit
    cfg = TrainConfig(model="llama-3.1-8b", method="full", gpu="A100-40GB", seq_len=512, batch_size=1,
                      gradient_checkpointing=True)
    panel = ConfigPanel(cfg, num_gpus=8)
    plan = cheapest_fit("llama-3.1-8b", cfg.method, "A100-40GB", 8, batch_size=1, seq_len=512,
                        gradient_checkpointing=True)
    assert not panel.estimate.fits and plan.found and plan.strategy != "ddp"
    assert f"would fit: {plan}" in panel.estimate_readout.value
    panel.hardware["strategy"].value = plan.strategy
    assert panel.estimate.fits and "would fit" not in panel.estimate_readout.value


def test_export_writes_launch_files_and_shows_errors_inline(tmp_path, monkeypatch):
    import json
    from pathlib import Path
    from ftlab.widgets import launch
    calls = []
    if launch.launch_writer() is None:       # write_launch not written yet: stand in for it (same signature)
        def fake(cfg, folder, *, main_address=None, **layout):
            calls.append(layout)
            if layout["num_machines"] > 1 and main_address is None:
                from ftlab.errors import ConfigError
                raise ConfigError("main_address", None, "the address of the first machine")
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / "README.md").write_text("run:\n\n    accelerate launch train.py\n")
            (Path(folder) / "config.json").write_text(json.dumps(cfg.to_dict()))
            return {"README.md": str(Path(folder) / "README.md"), "config.json": str(Path(folder) / "config.json")}
        monkeypatch.setattr(launch, "launch_writer", lambda: fake)
    panel = ConfigPanel(TrainConfig(output_dir=str(tmp_path / "run1")), num_gpus=2, strategy="zero2")
    assert panel.export.folder.value == "run1/launch"
    panel.fields["output_dir"].value = "run2"                      # the default folder follows the run folder
    assert panel.export.folder.value == "run2/launch"
    panel.export.button.click()
    written = panel.export.written
    assert written and all(Path(p).is_file() for p in written.values()) and panel.export.error is None
    assert all(Path(p).parent == tmp_path / "run2" / "launch" for p in written.values())
    assert json.loads(Path(written["config.json"]).read_text())["output_dir"] == str(tmp_path / "run2")
    assert "accelerate launch" in panel.export.status.value and str(tmp_path / "run2" / "launch") in \
        panel.export.status.value
    if calls:
        assert calls[-1]["strategy"] == "zero2" and calls[-1]["num_gpus"] == 2
    panel.hardware["num_machines"].value = 2
    panel.export.main_address.value = "   "                       # blank: no address for the other machines
    assert panel.export.export() is None and panel.export.error.field == "main_address"
    assert "main_address" in panel.export.status.value and panel.export.main_address.layout.display is None
    panel.export.main_address.value = "10.0.0.1"
    assert panel.export.export() is not None and panel.export.error is None
    panel.export.folder.value = "../outside"                      # inside the output root only, like the run folder
    assert panel.export.export() is None and panel.export.error.field == "launch_folder"
    panel.export.folder.value = "run2/launch"
    panel.hardware["strategy"].value = "ddp"
    panel.hardware["offload_optimizer"].value = True              # the panel in error: nothing is written
    assert panel.error.field == "offload_optimizer" and panel.export.export() is None
    assert "Fix it in the panel first" in panel.export.status.value and "offload_optimizer" in \
        panel.export.status.value


def test_setup_notebook_enables_colabs_widget_manager_on_colab(monkeypatch):
    """On Colab, plotly's FigureWidget (an anywidget) shows only after enable_custom_widget_manager(): a fake
    google.colab module records the call, and static figures use Colab's renderer."""
    import types

    import plotly.io as pio

    from ftlab.widgets import setup_notebook
    calls = []
    google, colab = types.ModuleType("google"), types.ModuleType("google.colab")
    colab.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: calls.append("enabled"))
    google.colab = colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    before = pio.renderers.default
    try:
        setup_notebook()
        assert calls == ["enabled"] and pio.renderers.default == "colab"
    finally:
        pio.renderers.default = before
    monkeypatch.delitem(sys.modules, "google.colab")
    setup_notebook()  # not on Colab: nothing called, JupyterLab's renderer
    assert calls == ["enabled"] and pio.renderers.default == "plotly_mimetype+notebook"


def test_the_readme_colab_install_line_pins_what_pyproject_pins():
    """The README's Colab cell installs ftlab's pins (keeping Colab's own torch): every name==version in it is
    the version pyproject.toml pins."""
    import re
    import tomllib
    root = Path(__file__).resolve().parent.parent
    pins = {d.split("==")[0].lower(): d.split("==")[1]
            for d in tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]}
    readme = (root / "README.md").read_text()
    cell = readme[readme.index("**On Colab**"):readme.index("Conda users")]
    found = dict((n.lower(), v) for n, v in re.findall(r"([A-Za-z0-9_.-]+)==([0-9][^\s`&]*)", cell))
    assert {"trl", "peft", "bitsandbytes", "anywidget"} <= set(found)
    assert all(pins.get(name) == version for name, version in found.items() if name in pins), found
    assert "torch==" not in cell  # Colab's CUDA torch stays


def test_readout_shows_the_largest_batch_and_sequence_that_fit():
    import re

    from ftlab.memory import max_batch_size, max_seq_len
    cfg = TrainConfig(gpu="T4", seq_len=256, batch_size=4)
    panel = ConfigPanel(cfg)
    text = re.sub("<[^>]+>", " ", panel.estimate_readout.value)
    kw = dict(method=cfg.method, lora_r=cfg.lora_r, lora_targets=cfg.lora_targets)
    batch = max_batch_size(cfg.model, "T4", seq_len=256, **kw)
    seq = max_seq_len(cfg.model, "T4", batch_size=4, **kw)
    assert f"largest batch that fits at 256 tokens: {batch:,}" in text and batch > 4
    assert f"longest sequence that fits at batch 4: {seq:,} tokens" in text
    panel.hardware["num_gpus"].value = 2
    panel.hardware["strategy"].value = "zero3"
    zero3 = max_batch_size(cfg.model, "T4", seq_len=256, num_gpus=2, strategy="zero3", **kw)
    assert f"largest batch a GPU that fits at 256 tokens: {zero3:,}" in re.sub("<[^>]+>", " ",
                                                                               panel.estimate_readout.value)
