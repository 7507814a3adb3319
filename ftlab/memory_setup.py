"""The set-up the calculator estimates, checked once: `Setup.build(model, **arguments)` checks every argument
(ConfigError names the field) and resolves the architecture; `setup_for(cfg)` makes one from a TrainConfig.
ftlab.memory's steps read a Setup instead of fourteen keyword arguments."""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, replace

from ftlab.choices import BITS, OPTIMIZERS, TRAINERS
from ftlab.config import TrainConfig
from ftlab.errors import ConfigError, check_bool, check_choice, check_int, check_strings, check_text
from ftlab.gpus import GPUS
from ftlab.layout import LAYOUT_DEFAULTS, Layout
from ftlab.memory_encoder import ENCODER_TYPES, config_dict
from ftlab.method_table import INFERENCE, LORA, METHODS, Method
from ftlab.models import Arch, resolve_arch
from ftlab.shapes import Stream

# The arguments a Setup is built from (estimate_memory's, max_batch_size's, max_seq_len's), with their defaults.
DEFAULTS = dict(method=LORA.name, bits=None, lora_r=16, lora_targets="all-linear", num_virtual_tokens=20, batch_size=4,
                seq_len=512, gradient_checkpointing=False, optimizer="adamw", gpu=None, trainer="trl",
                adapter_size=64, top_k_layers=2, device="cuda", **LAYOUT_DEFAULTS)
DEVICES = ("cuda", "cpu")  # cuda: device memory per GPU; cpu: the process's peak resident memory (ftlab.memory_cpu)

# Architectures the calculator must not take for a decoder: an encoder has no causal LM head and attends both
# ways; an encoder-decoder has two stacks. Estimating them with the decoder formula would give a wrong number.
NOT_DECODERS = ("bert", "roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2", "xlm-roberta",
                "mpnet", "camembert", "modernbert", "t5", "mt5", "bart", "mbart", "pegasus", "whisper")


@dataclass(frozen=True)
class Setup:
    arch: Arch
    method: Method
    bits: int
    lora_r: int
    lora_targets: object
    num_virtual_tokens: int
    adapter_size: int
    top_k_layers: int
    batch_size: int
    seq_len: int
    gradient_checkpointing: bool
    optimizer: str
    gpu: str | None
    trainer: str
    mods: list = field(default_factory=list)   # the LoRA-style targets, resolved against the architecture
    layout: Layout = Layout()                  # GPUs, machines and strategy (ftlab.layout): the estimate is per GPU
    device: str = "cuda"                       # "cpu": fp32 weights and compute, no autocast (ftlab.trainer_args)

    @property
    def train(self) -> bool:
        return self.method is not INFERENCE

    @property
    def kbit(self) -> bool:          # prepare_model_for_kbit_training ran
        return self.bits in (8, 4) and self.train

    @property
    def stream(self) -> Stream:      # TRL trains under bf16 autocast; bits=32 means mixed precision
        if self.device == "cpu":     # no bf16/fp16 on a CPU (trainer_args): fp32 everywhere, no autocast
            return Stream(autocast=False, fp32_stream=True)
        # DeepSpeed casts fp32 weights to bf16 and FSDP computes in bf16: a 32-bit base streams bf16 under them
        fp32 = self.bits == 32 and self.layout.strategy == "ddp"
        return Stream(autocast=self.trainer == "trl" or self.bits == 32, fp32_stream=self.kbit or fp32)

    @property
    def virtual(self) -> int:        # positions the method puts before the input
        return self.num_virtual_tokens if self.method.virtual_tokens else 0

    @property
    def tokens(self) -> int:         # tokens in one step
        return self.batch_size * (self.seq_len + self.virtual)

    @property
    def trainable_params(self) -> int:
        return self.method.count(self.arch, self) if self.train else 0

    @classmethod
    def build(cls, model, **kw) -> "Setup":
        check_keywords(kw)  # a misspelt argument (lora_rank=8) is named, with the nearest, never dropped
        a = {**DEFAULTS, **kw}
        method = row(a["method"])
        bits = check_choice("bits", (method.needs_bits or 16) if a["bits"] is None else a["bits"], BITS)
        if method.needs_bits and bits != method.needs_bits:
            raise ConfigError("bits", bits, f"{method.needs_bits} with method={method.name!r} (QLoRA is LoRA on a "
                              "4-bit base; LoRA on an 8-bit base is method='lora', bits=8)")
        sizes = {k: check_int(k, a[k], 1) for k in ("lora_r", "batch_size", "seq_len", "num_virtual_tokens",
                                                    "adapter_size", "top_k_layers")}
        checkpointing = check_bool("gradient_checkpointing", a["gradient_checkpointing"])
        optimizer = check_choice("optimizer", a["optimizer"], OPTIMIZERS)
        trainer = check_choice("trainer", a["trainer"], TRAINERS)
        gpu = None if a["gpu"] is None else check_choice("gpu", a["gpu"], GPUS)
        targets = (a["lora_targets"] if isinstance(a["lora_targets"], str)
                   else check_strings("lora_targets", a["lora_targets"]))
        device = check_choice("device", a["device"], DEVICES)
        layout = Layout.build(**{k: a[k] for k in LAYOUT_DEFAULTS}, bits=bits, optimizer=optimizer)
        if (method is INFERENCE or device == "cpu") and layout != Layout():
            name = next(k for k in LAYOUT_DEFAULTS if a[k] != LAYOUT_DEFAULTS[k])
            why = ("device='cpu': the CPU estimate is one process on one machine" if device == "cpu" else
                   "method='inference': the calculator spreads training over several GPUs, not serving")
            raise ConfigError(name, a[name], f"{LAYOUT_DEFAULTS[name]!r} with {why}")
        setup = cls(arch=None, method=method, bits=bits, lora_targets=targets, gradient_checkpointing=checkpointing,
                    optimizer=optimizer, gpu=gpu, trainer=trainer, layout=layout, device=device, **sizes)
        if model is None or isinstance(model, (int, float, bool, list, tuple)):
            raise ConfigError("model", model, "a preset name, hub id, local folder or a transformers config")
        if isinstance(model, str):
            check_text("model", model)
        if bits in (8, 4) and method.trains_base:
            raise ConfigError("bits", bits, f"16 or 32 with method={method.name!r}: quantised weights cannot be "
                              "trained directly")
        return setup._on(as_arch(model, "model"))

    def _on(self, arch: Arch) -> "Setup":
        """This set-up on `arch`, its sizes checked against the architecture."""
        if self.seq_len + self.virtual > arch.max_positions:
            raise ConfigError("seq_len", self.seq_len, f"at most {arch.max_positions - self.virtual} for this model "
                              f"(max_position_embeddings={arch.max_positions})")
        fitted = self.method.fits_arch(arch, self) if self.method.fits_arch else []
        return replace(self, arch=arch, mods=fitted)


def row(method) -> Method:
    """The method table's row for a method name (the calculator also takes "inference")."""
    name = check_choice("method", method, [*METHODS, INFERENCE.name])
    return INFERENCE if name == INFERENCE.name else METHODS[name]


def setup_for(cfg: TrainConfig, trainer: str = "trl", device: str = "cuda", **layout) -> Setup:
    """The calculator's set-up for a TrainConfig (validated again: a field may have changed after creation), on
    the GPUs `layout` gives (num_gpus, strategy, ...: ftlab.layout; one GPU by default) or on the CPU."""
    cfg.validate()
    return Setup.build(cfg.model, **setup_arguments(cfg), trainer=trainer, device=device, **layout)


def setup_arguments(cfg: TrainConfig) -> dict:
    """A TrainConfig's fields as the calculator's arguments (gpu included)."""
    return dict(method=cfg.method, bits=cfg.effective_bits, lora_r=cfg.lora_r, lora_targets=cfg.target_modules,
                num_virtual_tokens=cfg.num_virtual_tokens, adapter_size=cfg.adapter_size,
                top_k_layers=cfg.top_k_layers, batch_size=cfg.batch_size, seq_len=cfg.seq_len,
                gradient_checkpointing=cfg.gradient_checkpointing, optimizer=cfg.optimizer, gpu=cfg.gpu)


def check_keywords(kw: dict) -> None:
    """Every keyword is a calculator argument; a misspelt one (lora_rank=8) is refused with the nearest."""
    names = [n for n in DEFAULTS if n != "gpu"]
    for k in kw:
        if k not in DEFAULTS:
            near = difflib.get_close_matches(str(k), names, n=1, cutoff=0.6)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise ConfigError(str(k), kw[k], f"{hint}it is not an estimate_memory argument; the arguments are {names}")


def as_arch(value, field: str = "arch") -> Arch:
    """An ftlab.models.Arch as given, or read by resolve_arch from a preset name, hub id, local folder or
    transformers config (or its dict); anything else is refused with ConfigError naming `field`. An encoder or
    encoder-decoder config is refused: the decoder formula would misstate its memory."""
    if isinstance(value, Arch):
        return value
    if isinstance(value, str):
        check_text(field, value)
    if isinstance(value, (str, os.PathLike, dict)) or callable(getattr(value, "to_dict", None)):
        refuse_non_decoder(value)
        return resolve_arch(value)
    hint = " (for a loaded model: resolve_arch(model.config))" if hasattr(value, "config") else ""
    raise ConfigError(field, value if value is None or isinstance(value, (int, float, list, tuple)) else
                      f"a {type(value).__name__}", "an ftlab.models.Arch, or a preset name, hub id, local folder or "
                      f"transformers config that resolve_arch reads{hint}")


def refuse_non_decoder(model) -> None:
    """A config (object, dict, or a local folder's config.json) of an encoder or encoder-decoder is refused."""
    d = config_dict(model)
    if not isinstance(d, dict):
        return
    kind = d.get("model_type")
    if kind in NOT_DECODERS or d.get("is_encoder_decoder"):
        what = "an encoder-decoder" if d.get("is_encoder_decoder") else "an encoder"
        raise ConfigError("model", kind or model, "a decoder-only causal language model (Llama, Qwen2, Gemma, "
                          f"Mistral, ...): this config is {what} "
                          f"({kind!r}), whose memory the decoder formula would misstate"
                          + (": estimate it with task='classification'" if kind in ENCODER_TYPES else ""))
