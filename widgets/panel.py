"""ConfigPanel: edit a TrainConfig with widgets; invalid values get an inline message, never a traceback.

The panel is built from the lab's parameters, so a papermill run (which clicks nothing) uses exactly
them; `panel.config` is the current valid config. Its readout shows the memory estimate and whether it
fits the target GPU; of the method-specific fields it shows those of the chosen method only.

The hardware group (GPU type, GPUs a machine, machines, strategy, offloading: widgets.hardware) edits
`panel.layout`, an ftlab.layout.Layout checked with the config's bits; the estimate is then per GPU, and
"export launch files" (widgets.launch) writes what a run on those GPUs needs.

The fields are grouped in tabs (model; method and its knobs; data; training; hardware); a field in error brings
its tab forward. Below them the estimate is drawn as a bar stacked by part against the GPU's capacity, redrawn
on every change. A DataPanel given as `data` joins the data tab: its seq_len and the panel's move together, and
while its file is the dataset, `panel.data_for` (what a Run trains on) gives its records.
"""
from __future__ import annotations

import html
from dataclasses import replace
from pathlib import Path

import ipywidgets as W
from IPython.display import display

from ftlab.config import BITS, OPTIMIZERS, QUANT_TYPES, REPORT_TO, TARGET_SHORTCUTS, ConfigError, TrainConfig
from ftlab.catalog import DATASETS, load_records
from ftlab.data import sft_data
from ftlab.errors import DataError, FtlabError
from ftlab.layout import Layout
from ftlab.memory import GPUS, estimate_memory
from ftlab.method_table import METHOD_KNOBS, METHODS
from ftlab.methods import check_setup
from ftlab.models import PRESETS
from ftlab.results import inside
from ftlab.widgets.hardware import hardware_fields, hidden_hardware, layout_arguments, scale_lines, title
from ftlab.widgets.data_panel import DataPanel
from ftlab.widgets.launch import LaunchExport
from ftlab.widgets.memory_plots import CapacityBar

RANKS = [1, 2, 4, 8, 16, 32, 64, 128, 256]
STYLE = {"description_width": "150px"}
GROUPS = {"model": ("model", "bits", "quant_type", "double_quant", "trust_remote_code"),
          "method": ("method", "lora_r", "lora_alpha", "lora_targets", "num_virtual_tokens", "adapter_size",
                     "top_k_layers"),
          "data": ("dataset",),
          "training": ("batch_size", "seq_len", "max_steps", "learning_rate", "gradient_checkpointing", "optimizer",
                       "output_dir", "report_to"),
          "hardware": ("gpu",)}  # and the hardware fields (widgets.hardware)
SFT_DATASETS = [name for name in DATASETS if name != "preferences"]  # preference pairs train no SFT run


def wide():  # a Layout each: fields are hidden one by one through their layout
    return W.Layout(width="420px")


class ConfigPanel:
    def __init__(self, config: TrainConfig, num_gpus: int = 1, strategy: str = "ddp", offload_optimizer: bool = False,
                 offload_params: bool = False, num_machines: int = 1, main_address: str | None = None,
                 launch_folder: str | None = None, data=None):
        """`config`: the set-up; the keywords: the GPUs it runs on (ftlab.layout.Layout, checked here: a wrong
        one raises ConfigError naming it), the main machine's address, the launch files' folder (inside the
        output root; default: the run folder's launch/) and `data`, a DataPanel with the user's own file."""
        if not isinstance(config, TrainConfig):
            raise ConfigError("config", config, "a TrainConfig: ConfigPanel(TrainConfig(**params)), or "
                              "ConfigPanel(TrainConfig.from_params(globals())) in a lab")
        if data is not None and not isinstance(data, DataPanel):
            raise ConfigError("data", data, "a DataPanel (ftlab.widgets.DataPanel(tokenizer, path=...)) or None")
        self.config, self.data = config, data
        self.layout = Layout.build(num_gpus=num_gpus, strategy=strategy, offload_optimizer=offload_optimizer,
                                   offload_params=offload_params, num_machines=num_machines,
                                   bits=config.effective_bits, optimizer=config.optimizer)
        self.error: FtlabError | None = None  # a ConfigError, or ModelNotFoundError (field model)
        # the run folder is chosen by name inside the lab's output root: a typed path cannot escape it
        self.output_root = str(Path(config.output_dir).parent)
        self.fields = self._make_fields(config)
        self.hardware = hardware_fields(self.layout, STYLE, wide)
        self.message = W.HTML()
        self.summary = W.HTML()
        self.estimate_readout = W.HTML()
        self.estimate = None
        self._listeners = []
        for name, w in {**self.fields, **self.hardware}.items():
            w.observe(lambda change, name=name: self._changed(name, change["new"]), names="value")
        self.export = LaunchExport(self, STYLE, wide, main_address=main_address, folder=launch_folder)
        self.bar = CapacityBar()
        self.tabs = self._make_tabs()
        self.widget = W.VBox([W.HTML("<b>Fine-tuning set-up</b>"), self.tabs, self.message, self.summary,
                              W.HBox([self.bar.widget, self.estimate_readout], layout=W.Layout(flex_flow="row wrap")),
                              self.export.widget])
        if data is not None:
            self._join(data)
        self._show()

    def _make_tabs(self) -> W.Tab:
        groups = {name: [self.fields[f] for f in names] for name, names in GROUPS.items()}
        groups["hardware"] += list(self.hardware.values())
        if self.data is not None:
            groups["data"].append(self.data.widget)
        return W.Tab(children=[W.VBox(ws) for ws in groups.values()], titles=list(groups))

    def _join(self, data) -> None:
        """The data panel's seq_len follows the panel's (and back); while its file is valid it is the dataset."""
        W.link((self.fields["seq_len"], "value"), (data.fields["seq_len"], "value"))
        data.fields["seq_len"].value = self.fields["seq_len"].value

        followed = [None]

        def follow(_):  # a new file becomes the dataset; other changes (seq_len, columns) leave the choice alone
            if data.path is not None and data.path != followed[0]:
                followed[0] = self.fields["dataset"].value = data.path
        data.on_change(follow)
        follow(None)

    @property
    def uses_own_data(self) -> bool:
        """True when the dataset is the data panel's file (a Run then trains on its records)."""
        return self.data is not None and self.data.path is not None and self.config.dataset == self.data.path

    def data_for(self, cfg, tokenizer) -> tuple[list[dict], list[dict]]:
        """(train, validation) records for a run of `cfg` (ftlab.runs.panel_trainer's data_for): the data panel's
        split when its file is cfg's dataset, else ftlab.data.sft_data (an embedded dataset, a JSONL file, a hub id)."""
        if self.data is not None and self.data.path is not None and cfg.dataset == self.data.path:
            return self.data.records()
        return sft_data(cfg, tokenizer)

    def _make_fields(self, c: TrainConfig) -> dict:
        """One widget per TrainConfig field the panel edits, set to `c`'s values."""
        style = STYLE
        trainable = [p.name for p in PRESETS.values() if not p.calculator_only]
        return {
            "model": W.Combobox(value=c.model, options=trainable, description="model", ensure_option=False,
                                placeholder="preset, hub id or folder", style=style, layout=wide()),
            "method": W.Dropdown(value=c.method, options=list(METHODS), description="method", style=style,
                                 layout=wide()),
            "lora_r": W.SelectionSlider(value=c.lora_r, options=sorted(set(RANKS) | {c.lora_r}),
                                        description="LoRA rank r", style=style, layout=wide()),
            "lora_alpha": W.FloatText(value=c.lora_alpha, description="LoRA alpha", style=style, layout=wide()),
            "lora_targets": W.Combobox(value=(c.lora_targets if isinstance(c.lora_targets, str)
                                              else ",".join(c.lora_targets)),
                                       options=list(TARGET_SHORTCUTS), ensure_option=False, style=style, layout=wide(),
                                       description="target modules",
                                       placeholder="q,v · all-linear · or q_proj,up_proj"),
            "num_virtual_tokens": W.IntText(value=c.num_virtual_tokens, description="virtual tokens", style=style,
                                            layout=wide()),
            "adapter_size": W.IntText(value=c.adapter_size, description="adapter bottleneck", style=style,
                                      layout=wide()),
            "top_k_layers": W.IntText(value=c.top_k_layers, description="top-k blocks trained", style=style,
                                      layout=wide()),
            "bits": W.Dropdown(value=c.bits, options=list(BITS), description="base weight bits", style=style,
                               layout=wide()),
            "quant_type": W.Dropdown(value=c.quant_type, options=list(QUANT_TYPES), description="4-bit type",
                                     style=style, layout=wide()),
            "double_quant": W.Checkbox(value=c.double_quant, description="double quantisation (4-bit)", style=style,
                                       indent=False, layout=wide()),
            "dataset": W.Combobox(value=c.dataset, options=SFT_DATASETS, description="dataset", ensure_option=False,
                                  placeholder="embedded name, a .jsonl file, or a hub id", style=style,
                                  layout=wide()),
            "batch_size": W.IntText(value=c.batch_size, description="batch size", style=style, layout=wide()),
            "seq_len": W.IntText(value=c.seq_len, description="sequence length", style=style, layout=wide()),
            "max_steps": W.IntText(value=c.max_steps, description="steps", style=style, layout=wide()),
            "learning_rate": W.FloatText(value=c.learning_rate, description="learning rate", style=style,
                                         layout=wide()),
            "gradient_checkpointing": W.Checkbox(value=c.gradient_checkpointing, description="gradient checkpointing",
                                                 style=style, indent=False, layout=wide()),
            "optimizer": W.Dropdown(value=c.optimizer, options=list(OPTIMIZERS), description="optimizer", style=style,
                                    layout=wide()),
            "gpu": W.Dropdown(value=c.gpu, options=list(GPUS), description="GPU type", style=style, layout=wide()),
            "output_dir": W.Text(value=Path(c.output_dir).name, description="run folder", style=style, layout=wide(),
                                 tooltip=f"a folder name inside {self.output_root}/"),
            "report_to": W.Dropdown(value=c.report_to, options=list(REPORT_TO), description="log to", style=style,
                                    layout=wide(), tooltip="tensorboard: TRL also logs each step under the run folder's "
                                                           "runs/"),
            "trust_remote_code": W.Checkbox(value=c.trust_remote_code, indent=False, style=style,
                                            layout=W.Layout(width="560px"),  # its description in full
                                            description="trust remote code (off: model code from the hub is never "
                                                        "run)"),
        }

    def on_change(self, callback) -> None:
        """callback(config, estimate) after every valid change (e.g. to redraw a memory plot)."""
        self._listeners.append(callback)

    def _values(self) -> dict:
        values = {name: w.value for name, w in self.fields.items()}
        if values["lora_targets"] not in TARGET_SHORTCUTS:  # typed module names, comma-separated
            values["lora_targets"] = [t.strip() for t in str(values["lora_targets"]).split(",") if t.strip()]
        if values["output_dir"] != Path(self.config.output_dir).name:
            inside(self.output_root, values["output_dir"])  # ConfigError for "../x" or "/etc"
            values["output_dir"] = str(Path(self.output_root) / values["output_dir"])
        else:
            values["output_dir"] = self.config.output_dir
        return values

    def _changed(self, name, value):
        # the config is rebuilt from every widget, so it always says what the panel shows (a field that
        # depends on another, such as qlora needing bits=4, is right once both are set)
        try:
            config = replace(self.config, **self._values())  # replace() re-runs validation
            # what needs the model's shape, and whether bitsandbytes can serve 4/8 bits; a model whose architecture
            # cannot be read (not a preset, folder or cached hub id offline) is shown on the model field
            check_setup(config, model_must_resolve=True)
            self._check_dataset(config.dataset)
            # the GPUs' layout with this config's bits (an 8-bit base cannot be sharded): both change together
            layout = Layout.build(**{k: w.value for k, w in self.hardware.items()}, bits=config.effective_bits,
                                  optimizer=config.optimizer)
            self.config, self.layout, self.error = config, layout, None
        except ConfigError as e:
            self.error = e
        except FtlabError as e:  # ModelNotFoundError names its field (model): shown there, as it is
            self.error = e if e.field in {**self.fields, **self.hardware} else ConfigError(name, value, str(e))
        except Exception as e:  # any other check also lands inline, never as a traceback
            self.error = ConfigError(name, value, str(e))
        self._show()
        if self.error is None:
            for cb in self._listeners:
                cb(self.config, self.estimate)

    def _check_dataset(self, name: str) -> None:
        """The dataset can be read (an embedded name, a .jsonl/.json file of prompt/completion records, a hub id
        when online), or is the data panel's file; read once a name, not on every change."""
        if name == getattr(self, "_dataset_ok", None) or (self.data is not None and name == self.data.path):
            return
        try:
            load_records(name, "validation", n=1)
        except FtlabError as e:
            more = " (a .csv or .parquet file, or other columns: load it in the data tab's file field)"
            raise DataError(f"{e}{more if self.data is not None else ''}", field="dataset") from None
        self._dataset_ok = name

    def _show(self):
        self._show_relevant_fields()
        if self.error:
            group = next((i for i, names in enumerate(GROUPS.values()) if self.error.field in names),
                         len(GROUPS) - 1 if self.error.field in self.hardware else None)
            if group is not None:  # bring the field's tab forward
                self.tabs.selected_index = group
            self.message.value = (f"<span style='color:#b00020'>⚠ <b>{html.escape(self.error.field)}</b>: "
                                  f"{html.escape(str(self.error))}</span>")
        else:
            self.message.value = ""
        c, m = self.config, METHODS[self.config.method]
        each = " on each GPU" if self.layout.world > 1 else ""
        self.summary.value = (f"<span style='color:#555'>{html.escape(c.method)}: {html.escape(m.summary)}<br>"
                              f"{c.batch_size}×{c.seq_len} = {c.batch_size * c.seq_len} tokens a step{each} · "
                              f"a usual learning rate for {html.escape(c.method)}: {m.lr:g} · "
                              f"saves to {html.escape(c.output_dir)}</span>")
        self._show_estimate()
        self.export.follow(c, self.hardware["num_machines"].value)

    def _show_estimate(self):
        """The estimate of the valid config on the valid layout (per GPU on several), what fits, and the layout's
        lines: CPU memory when offloading, the effective batch, a layout that would fit."""
        c, lay = self.config, self.layout
        try:
            e = self.estimate = estimate_memory(c, **layout_arguments(lay))
        except Exception as err:  # e.g. a hub id whose config can't be read offline
            self.estimate = None
            self.estimate_readout.value = (f"<span style='color:#b00020'>memory estimate unavailable: "
                                           f"{html.escape(str(err))}</span>")
            return
        parts = " · ".join(f"{k} {v:.2f}" for k, v in e.components.items() if v >= 0.01)
        badge = ("<span style='background:#2e7d32;color:white;padding:1px 6px;border-radius:3px'>fits</span>"
                 if e.fits else "<span style='background:#b00020;color:white;padding:1px 6px;border-radius:3px'>"
                 "does not fit</span>")
        capacity = GPUS[c.gpu].total_gib
        self.bar.update(e, capacity, f"each {c.gpu}" if lay.world > 1 else c.gpu)
        head, about = title(lay, e.total_gib)
        lines = "".join(f"<br>{line}" for line in scale_lines(c, lay, e))
        self.estimate_readout.value = (f"<b>{head}</b>{html.escape(about)} {badge} {html.escape(str(e.fits))}"
                                       f"<br><span style='color:#555;font-size:90%'>{parts} (GiB)</span>{lines}")

    def _show_relevant_fields(self):
        """Show the method-specific fields of the chosen method only (a rank means nothing to prompt tuning),
        the 4-bit fields only at 4 bits, and the strategy and offloading only where they mean something
        (several GPUs or a strategy chosen). Hidden fields keep their values; a field in error stays shown."""
        method = METHODS[self.fields["method"].value]
        hidden = set(METHOD_KNOBS) - set(method.knobs)
        if 4 not in (method.needs_bits, self.fields["bits"].value):
            hidden |= {"quant_type", "double_quant"}
        hidden |= hidden_hardware({k: w.value for k, w in self.hardware.items()})
        if self.error is not None:
            hidden.discard(self.error.field)
        for name, w in {**self.fields, **self.hardware}.items():
            w.layout.display = "none" if name in hidden else None

    def _ipython_display_(self):
        display(self.widget)
