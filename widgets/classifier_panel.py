"""ClassifierPanel: the memory of fine-tuning an encoder with a classification head, part by part, against a GPU
(or this machine's RAM), redrawn on every change; a value that is not allowed gets an inline message naming the
field, and the last valid estimate stays drawn.

The calculator behind it is ftlab.memory.estimate_memory(..., task="classification") (ftlab.memory_encoder): the
encoder's architecture numbers only, no weights. `panel.arguments` is what was estimated, `panel.estimate` the
result (None until a first valid set-up).
"""
from __future__ import annotations

import html

import ipywidgets as W

from ftlab.errors import FtlabError
from ftlab.gpus import GPUS
from ftlab.memory import estimate_memory
from ftlab.memory_encoder import ENCODER_METHODS
from ftlab.method_table import LORA, METHODS
from ftlab.models import ENCODER_PRESETS
from ftlab.widgets.memory_plots import CapacityBar

STYLE = {"description_width": "150px"}
LOW_RANK_KNOBS = ("lora_r", "lora_targets")  # shown for a low-rank method's row; top_k_layers for a row that takes it
CPU = "this machine (CPU)"


def _wide():
    return W.Layout(width="420px")


class ClassifierPanel:
    def __init__(self, model: str = "minilm-l6", method: str = LORA.name, num_labels: int = 2, batch_size: int = 16,
                 seq_len: int = 128, lora_r: int = 8, lora_targets: str = "query,value", top_k_layers: int = 2,
                 gpu: str = "T4"):
        """The starting set-up; gpu: a GPU the calculator knows, or "cpu" for this machine's RAM."""
        f = {"model": W.Combobox(value=model, options=list(ENCODER_PRESETS), ensure_option=False,
                                 description="encoder", placeholder="preset, hub id or folder"),
             "method": W.Dropdown(value=method, options=list(ENCODER_METHODS), description="method"),
             "num_labels": W.IntText(value=num_labels, description="labels"),
             "lora_r": W.IntText(value=lora_r, description="LoRA rank r"),
             "lora_targets": W.Text(value=lora_targets, description="target modules",
                                    placeholder="query,value · all-linear · dense"),
             "top_k_layers": W.IntText(value=top_k_layers, description="top-k blocks trained"),
             "batch_size": W.IntText(value=batch_size, description="batch size"),
             "seq_len": W.IntText(value=seq_len, description="sequence length"),
             "gpu": W.Dropdown(value=CPU if gpu == "cpu" else gpu, options=[*GPUS, CPU], description="device")}
        for w in f.values():
            w.style, w.layout = STYLE, _wide()
            w.observe(lambda _: self._update(), names="value")
        self.fields = f
        self.message = W.HTML()
        self.bar = CapacityBar()
        self.estimate = None
        self.arguments: dict | None = None
        self.error: FtlabError | None = None
        self.widget = W.VBox([W.HTML("<b>Encoder + classification head: memory of a training step</b>"),
                              *f.values(), self.message, self.bar.widget])
        self._update()

    def _values(self) -> dict:
        v = {name: w.value for name, w in self.fields.items()}
        targets = str(v["lora_targets"]).strip()
        v["lora_targets"] = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
        device = "cpu" if v.pop("gpu") == CPU else "cuda"
        v.update(device=device, gpu=None if device == "cpu" else self.fields["gpu"].value, task="classification")
        return v

    def _update(self) -> None:
        row = METHODS[self.fields["method"].value]
        for name in (*LOW_RANK_KNOBS, "top_k_layers"):
            takes = row.low_rank if name in LOW_RANK_KNOBS else name in row.knobs
            self.fields[name].layout.display = None if takes else "none"
        try:
            args = self._values()
            estimate = estimate_memory(args.pop("model"), **args)
        except FtlabError as e:  # ConfigError / ModelNotFoundError: shown inline, the last estimate kept
            self.error = e
            name = getattr(e, "field", None) or "model"
            self.message.value = (f"<span style='color:#b00020'>⚠ <b>{html.escape(str(name))}</b>: "
                                  f"{html.escape(str(e))}</span>")
            return
        self.error, self.estimate = None, estimate
        self.arguments = {"model": self.fields["model"].value, **args}
        capacity = estimate.fits.total_gib if estimate.fits else None
        where = "this machine's RAM" if args["device"] == "cpu" else args["gpu"]
        self.bar.update(estimate, capacity, where)
        self.message.value = (f"{estimate.trainable_params:,} trainable of {estimate.details['total_params']:,} "
                              f"parameters; {estimate.fits}")

    def figure(self):
        """A static copy of the bar (what an HTML export shows)."""
        return self.bar.figure()
