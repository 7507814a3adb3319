"""The run configuration: one flat dataclass, a one-line doc per field, validation that names the field.

A lab's `parameters` cell uses the same names, so `TrainConfig(**params)` is the whole hand-off
from a notebook (or papermill) to the library. Every bad value raises `ConfigError` (a ValueError)
whose message names the field, the bad value and what is allowed.
"""
from __future__ import annotations

import difflib
import importlib.util
import os
from dataclasses import asdict, dataclass, fields

# the allowed values live in ftlab.choices; they are importable from here too, where a lab looks for them
from ftlab.choices import BITS, OPTIMIZERS, QUANT_TYPES, TARGET_SHORTCUTS  # noqa: F401
from ftlab.errors import ConfigError, check_bool, check_choice, check_int, check_number, check_strings, check_text
from ftlab.gpus import GPUS
from ftlab.method_table import METHODS

# report_to: the trackers TRL's trainers may log to, chosen for working offline and in CI. name -> (the modules any
# of which serves it, as transformers looks for them; what to pip install). TensorBoard's event files land beside
# the run; trackio keeps its logs in a database under the Hugging Face cache and pulls in a web server, wandb and
# mlflow want an account or a server. "none": no tracker (ftlab's own run.json is written either way).
TRACKERS = {"tensorboard": (("tensorboard", "tensorboardX"), "tensorboard==2.21.0")}
REPORT_TO = ("none", *TRACKERS)


@dataclass
class TrainConfig:
    model: str = "smollm2-135m-instruct"  # preset name, hub id or local folder
    method: str = "lora"            # how to fine-tune: see ftlab.method_table.METHODS
    lora_r: int = 8                 # LoRA rank r: trainable parameters grow as r·(d_in + d_out) per layer
    lora_alpha: float = 16.0        # LoRA scale is alpha / r; 2·r is a common choice
    lora_dropout: float = 0.0       # dropout on the LoRA input, in [0, 1)
    lora_targets: str | list = "all-linear"  # "q", "q,v", "q,k,v,o", "all-linear" or a list of module names
    num_virtual_tokens: int = 20    # soft-prompt methods: learned tokens put before the input
    prompt_init_text: str = ""      # prompt tuning: start the virtual tokens from this text's embeddings ("" = random)
    adapter_size: int = 64          # Houlsby adapter bottleneck m: 2·(2·d·m + d + m) trainable parameters a block
    top_k_layers: int = 2           # top_k: how many of the last transformer blocks are trained
    bits: int = 16                  # storage of the frozen base weights: 32, 16, 8 or 4 (4 = QLoRA)
    quant_type: str = "nf4"         # 4-bit code: "nf4" (normal float, QLoRA's) or "fp4"
    double_quant: bool = True       # 4-bit: quantise the per-block constants too (saves ~0.37 bit a weight)
    dataset: str = "email_subject"  # embedded dataset name (ftlab.data.DATASETS) or a hub id when online
    max_steps: int = 30             # optimizer steps; tokens per step = batch_size × seq_len
    batch_size: int = 4             # sequences per step
    seq_len: int = 256              # tokens per sequence (longer ones are cut)
    learning_rate: float = 2e-4     # peak learning rate of the optimizer
    gradient_checkpointing: bool = False  # True recomputes activations in backward: less memory, ~30 % slower
    optimizer: str = "adamw"        # adamw, adamw_8bit, paged_adamw_8bit or sgd
    eval_examples: int = 16         # held-out examples scored before and after training
    seed: int = 0                   # seeds data order, initialisation and sampling
    output_dir: str = "runs/quickstart"  # where the adapter, logs and results.json go
    gpu: str = "T4"                 # the GPU the memory estimate is checked against (ftlab.gpus.GPUS)
    trust_remote_code: bool = False  # run model code from the hub: only for models you trust
    report_to: str = "none"         # "tensorboard": TRL logs each step to output_dir/runs/<date>_<host>/ (see TRACKERS)

    def __post_init__(self):
        self.validate()

    def validate(self) -> "TrainConfig":
        """Check every field (ConfigError names the first bad one) and normalise what is equal but written
        otherwise: numpy integers become int, `~` in output_dir becomes the home folder."""
        self.method = check_choice("method", self.method, METHODS)
        self.lora_r = check_int("lora_r", self.lora_r, 1, 4096)
        self.lora_alpha = check_number("lora_alpha", self.lora_alpha, 0, lo_open=True)
        try:
            self.lora_dropout = check_number("lora_dropout", self.lora_dropout, 0, 1, hi_open=True)
        except ConfigError:
            raise ConfigError("lora_dropout", self.lora_dropout, "a number in [0, 1)") from None
        targets = self.lora_targets
        if isinstance(targets, str):
            if targets not in TARGET_SHORTCUTS:
                raise ConfigError("lora_targets", targets, f"one of {list(TARGET_SHORTCUTS)} or a list of module names")
        else:
            if isinstance(targets, (list, tuple)) and not targets:
                raise ConfigError("lora_targets", targets,
                                  "a non-empty list of module names such as ['q_proj', 'v_proj']")
            self.lora_targets = check_strings("lora_targets", targets)
            if not all(t.strip() for t in self.lora_targets) or len(set(self.lora_targets)) != len(self.lora_targets):
                raise ConfigError("lora_targets", targets, "a list of distinct, non-empty module names "
                                  "such as ['q_proj', 'v_proj']")
        self.num_virtual_tokens = check_int("num_virtual_tokens", self.num_virtual_tokens, 1, 1024)
        self.prompt_init_text = check_text("prompt_init_text", self.prompt_init_text, allow_empty=True)
        self.adapter_size = check_int("adapter_size", self.adapter_size, 1, 65536)
        self.top_k_layers = check_int("top_k_layers", self.top_k_layers, 1, 1024)
        self.bits = check_choice("bits", self.bits, BITS)
        self.quant_type = check_choice("quant_type", self.quant_type, QUANT_TYPES)
        method = METHODS[self.method]
        if method.needs_bits and self.bits != method.needs_bits:
            raise ConfigError("bits", self.bits, f"{method.needs_bits} with method={self.method!r} "
                              "(QLoRA is LoRA on a 4-bit base)")
        if self.bits in (8, 4) and method.trains_base:
            raise ConfigError("bits", self.bits, f"16 or 32 with method={self.method!r}: quantised weights "
                              "cannot be trained directly (train adapters on them: lora, qlora, ia3, ...)")
        self.max_steps = check_int("max_steps", self.max_steps, 1, 10_000_000)
        self.batch_size = check_int("batch_size", self.batch_size, 1, 65536)
        self.seq_len = check_int("seq_len", self.seq_len, 8, 1_048_576)
        self.learning_rate = check_number("learning_rate", self.learning_rate, 0, 1.0, lo_open=True)
        self.optimizer = check_choice("optimizer", self.optimizer, OPTIMIZERS)
        self.gpu = check_choice("gpu", self.gpu, GPUS)
        self.eval_examples = check_int("eval_examples", self.eval_examples, 0, 100_000)
        self.seed = check_int("seed", self.seed, 0, 2**32 - 1)
        self._check_report_to()
        for name in ("gradient_checkpointing", "trust_remote_code", "double_quant"):
            setattr(self, name, check_bool(name, getattr(self, name)))
        for name in ("model", "dataset", "output_dir"):
            if isinstance(getattr(self, name), os.PathLike):  # a pathlib.Path is a path: keep it as its string
                setattr(self, name, os.fspath(getattr(self, name)))
            check_text(name, getattr(self, name))
        if self.output_dir.startswith("~"):  # "~/run" is the home folder's run, not a folder named "~" here
            self.output_dir = os.path.expanduser(self.output_dir)
        if os.path.isfile(self.output_dir):  # writability is checked when a run starts (results.check_output_dir)
            raise ConfigError("output_dir", self.output_dir, "a folder (this path is an existing file)")
        if method.refuses_checkpointing and self.gradient_checkpointing:
            raise ConfigError("gradient_checkpointing", True, f"False with method={self.method!r}: "
                              f"{method.refuses_checkpointing}")
        return self

    def _check_report_to(self) -> None:
        """A tracker from REPORT_TO, and installed: the trainer would otherwise fail at its start, or (given
        "all") log to whatever happens to be installed."""
        if not (isinstance(self.report_to, str) and self.report_to in REPORT_TO):
            raise ConfigError("report_to", self.report_to, f"one of {list(REPORT_TO)}: the trackers that work "
                              "offline, TensorBoard's event files written under output_dir")
        if self.report_to in TRACKERS:
            modules, pip = TRACKERS[self.report_to]
            if not any(importlib.util.find_spec(m) for m in modules):
                raise ConfigError("report_to", self.report_to, f"'none' until its package is installed: "
                                  f"pip install {pip}")

    @property
    def target_modules(self):
        """lora_targets as peft takes it: "all-linear" or a list of module names."""
        t = self.lora_targets
        return TARGET_SHORTCUTS[t] if isinstance(t, str) else list(t)

    @property
    def effective_bits(self) -> int:
        """The base's bit width: what the method needs (4 for qlora), else `bits`."""
        return METHODS[self.method].needs_bits or self.bits

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_params(cls, params: dict) -> "TrainConfig":
        """Build from a lab's parameters.

        A notebook's namespace (`globals()`, recognised by its `__name__`) holds every variable of the lab, so
        only the names that are config fields are taken from it. Any other dict must hold config fields only:
        a misspelt name (`lora_rank=64`) is refused with the nearest field, never dropped (the run would use
        r = 8 without a word)."""
        if not isinstance(params, dict):
            raise ConfigError("params", params, "a dict of TrainConfig fields, or a notebook's globals()")
        names = [f.name for f in fields(cls)]
        if "__name__" not in params:
            unknown = [k for k in params if k not in names]
            if unknown:
                near = difflib.get_close_matches(str(unknown[0]), names, n=1, cutoff=0.6)
                hint = f"did you mean {near[0]!r}? " if near else ""
                raise ConfigError(str(unknown[0]), params[unknown[0]], f"{hint}it is not a TrainConfig field; "
                                  f"the fields are {names}")
        return cls(**{k: v for k, v in params.items() if k in names})
