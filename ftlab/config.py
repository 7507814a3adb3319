"""The run configuration: one flat dataclass, a one-line doc per field, validation that names the field.

A lab's `parameters` cell uses the same names, so `TrainConfig(**params)` is the whole hand-off
from a notebook (or papermill) to the library. Every bad value raises `ConfigError` (a ValueError)
whose message names the field, the bad value and what is allowed.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields

BITS = (32, 16, 8, 4)
QUANT_TYPES = ("nf4", "fp4")
OPTIMIZERS = ("adamw", "adamw_8bit", "paged_adamw_8bit", "sgd")
TARGET_SHORTCUTS = {  # LoRA target presets, by the names Llama-style models use
    "q": ["q_proj"],
    "q,v": ["q_proj", "v_proj"],
    "q,k,v,o": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "all-linear": "all-linear",
}


class ConfigError(ValueError):
    """A configuration value is out of range; `.field` names it (widgets show it inline)."""

    def __init__(self, field_name: str, value, allowed: str):
        self.field = field_name
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field_name}={value!r} is not allowed: {allowed}")


@dataclass
class TrainConfig:
    model: str = "smollm2-135m-instruct"  # preset name, hub id or local folder
    method: str = "lora"            # how to fine-tune: see ftlab.methods.METHODS
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
    gpu: str = "T4"                 # the GPU the memory estimate is checked against (ftlab.memory.GPUS)
    trust_remote_code: bool = False  # run model code from the hub: only for models you trust

    def __post_init__(self):
        self.validate()

    def validate(self) -> "TrainConfig":
        from ftlab.methods import METHODS  # the method table is the single list of methods

        _choice("method", self.method, METHODS)
        _int_range("lora_r", self.lora_r, 1, 4096)
        _positive("lora_alpha", self.lora_alpha)
        if not isinstance(self.lora_dropout, (int, float)) or not 0 <= self.lora_dropout < 1:
            raise ConfigError("lora_dropout", self.lora_dropout, "a number in [0, 1)")
        targets = self.lora_targets
        if isinstance(targets, str):
            if targets not in TARGET_SHORTCUTS:
                raise ConfigError("lora_targets", targets, f"one of {list(TARGET_SHORTCUTS)} or a list of module names")
        elif not (isinstance(targets, (list, tuple)) and targets and all(isinstance(t, str) and t for t in targets)):
            raise ConfigError("lora_targets", targets, "a non-empty list of module names such as ['q_proj', 'v_proj']")
        _int_range("num_virtual_tokens", self.num_virtual_tokens, 1, 1024)
        if not isinstance(self.prompt_init_text, str):
            raise ConfigError("prompt_init_text", self.prompt_init_text, "a string ('' for random initialisation)")
        _int_range("adapter_size", self.adapter_size, 1, 65536)
        _int_range("top_k_layers", self.top_k_layers, 1, 1024)
        _choice("bits", self.bits, BITS)
        _choice("quant_type", self.quant_type, QUANT_TYPES)
        if self.method == "qlora" and self.bits != 4:
            raise ConfigError("bits", self.bits, "4 with method='qlora' (QLoRA is LoRA on a 4-bit base)")
        if self.bits in (8, 4) and self.method in ("full", "bitfit", "top_k"):
            raise ConfigError("bits", self.bits, f"16 or 32 with method={self.method!r}: quantised weights "
                              "cannot be trained directly (train adapters on them: lora, qlora, ia3, ...)")
        _int_range("max_steps", self.max_steps, 1, 10_000_000)
        _int_range("batch_size", self.batch_size, 1, 65536)
        _int_range("seq_len", self.seq_len, 8, 1_048_576)
        _positive("learning_rate", self.learning_rate, upper=1.0)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        from ftlab.memory import GPUS
        _choice("gpu", self.gpu, GPUS)
        _int_range("eval_examples", self.eval_examples, 0, 100_000)
        _int_range("seed", self.seed, 0, 2**32 - 1)
        for name in ("gradient_checkpointing", "trust_remote_code", "double_quant"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, getattr(self, name), "True or False")
        for name in ("model", "dataset", "output_dir"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(name, value, "a non-empty string")
        if os.path.isfile(self.output_dir):  # writability is checked when a run starts (results.check_output_dir)
            raise ConfigError("output_dir", self.output_dir, "a folder (this path is an existing file)")
        return self

    @property
    def target_modules(self):
        """lora_targets as peft takes it: "all-linear" or a list of module names."""
        t = self.lora_targets
        return TARGET_SHORTCUTS[t] if isinstance(t, str) else list(t)

    @property
    def effective_bits(self) -> int:
        return 4 if self.method == "qlora" else self.bits

    def memory_estimate(self, trainer: str = "trl"):
        """ftlab.memory.estimate_memory for this set-up on `gpu`."""
        from ftlab.memory import estimate_memory
        return estimate_memory(self.model, method=self.method, bits=self.effective_bits, lora_r=self.lora_r,
                               lora_targets=self.target_modules, num_virtual_tokens=self.num_virtual_tokens,
                               adapter_size=self.adapter_size, top_k_layers=self.top_k_layers,
                               batch_size=self.batch_size, seq_len=self.seq_len,
                               gradient_checkpointing=self.gradient_checkpointing, optimizer=self.optimizer,
                               gpu=self.gpu, trainer=trainer)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_params(cls, params: dict) -> "TrainConfig":
        """Build from a lab's parameters: names that aren't config fields are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})


def _choice(name, value, allowed):
    if value not in allowed:
        raise ConfigError(name, value, f"one of {list(allowed)}")


def _int_range(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, value, f"an integer from {lo} to {hi}")
    if not lo <= value <= hi:
        raise ConfigError(name, value, f"an integer from {lo} to {hi}")


def _positive(name, value, upper=None):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if ok and upper is not None and value > upper:
        ok = False
    if not ok:
        raise ConfigError(name, value, "a finite number > 0" + (f" and ≤ {upper}" if upper else ""))
