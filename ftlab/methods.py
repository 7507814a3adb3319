"""Putting a method on a loaded model: `apply_method(model, cfg)` asks cfg.method's row of the method table
(ftlab.method_table, re-exported here) what to do, after checking the model fits it; `check_setup` checks a
config against the model's shape before anything loads; `trainable_parameters(model)` counts what trains.

Saving and loading what a method trained: ftlab.trained. Looking inside trained methods: ftlab.analysis.
"""
from __future__ import annotations

import sys

import peft
import torch

from ftlab import quant
from ftlab.adapters import AdaptedLinear
from ftlab.config import TrainConfig
from ftlab.errors import ConfigError
from ftlab.memory_setup import as_arch
from ftlab.method_table import FAMILIES, METHOD_KNOBS, METHODS, Method, register_method  # the table, re-exported
from ftlab.models import resolve_arch, resolve_source


def adapter_on(model) -> str | None:
    """What adapter `model` already carries ("LORA", "PROMPT_TUNING", "Houlsby", ...), or None: a peft model, a base
    whose layers peft injected (the base of an earlier apply_method), or ftlab's own bottleneck adapters."""
    if hasattr(model, "peft_config"):
        kinds = {str(getattr(getattr(c, "peft_type", None), "value", getattr(c, "peft_type", "?"))).upper()
                 for c in model.peft_config.values()} if isinstance(model.peft_config, dict) else {"peft"}
        return "/".join(sorted(kinds))
    tuners = sys.modules.get("peft.tuners.tuners_utils")
    for m in model.modules():
        if tuners is not None and isinstance(m, tuners.BaseTunerLayer):  # peft.tuners.<kind>.layer.Linear
            parts = type(m).__module__.split(".")
            kind = parts[2].upper() if len(parts) > 2 and parts[:2] == ["peft", "tuners"] else "peft"
            return f"{kind} (peft, injected into this base)"
        if isinstance(m, AdaptedLinear):
            return "Houlsby bottleneck (method='adapter')"
    return None


def check_model(model, field: str = "model", what: str = "apply_method(model, cfg)"):
    """A torch model; a (model, tokenizer) pair is answered with how to unpack it."""
    if isinstance(model, tuple):
        raise ConfigError(field, f"a tuple of {len(model)}", f"the model alone: model, tokenizer = load_model(...) "
                          f"(or load_for(cfg)), then {what}")
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(field, model if model is None or isinstance(model, (str, int, float, bool)) else
                          f"a {type(model).__name__}", "a transformers model (load_model or load_for returns one)")
    return model


def _check_bits(cfg, model, method: Method) -> bool:
    """Whether the base is quantised; refused when the method needs another bit width."""
    quantized = bool(getattr(model, "is_quantized", False) or getattr(model, "is_loaded_in_4bit", False))
    if method.needs_bits and not quantized:
        raise ConfigError("bits", cfg.effective_bits, f"a base loaded at {method.needs_bits} bits for "
                          f"method={cfg.method!r}: this model's weights are not quantised; load it with "
                          f"load_model(..., bits={method.needs_bits}) or load_for(cfg)")
    if quantized and method.trains_base:
        raise ConfigError("bits", (getattr(model, "ftlab_info", None) or {}).get("bits", "4 or 8"),
                          f"16 or 32 for the base of method={cfg.method!r}: this model's weights are quantised, "
                          "and quantised weights cannot be trained directly; load the base at 16 or 32 bits "
                          "(load_for(cfg) with bits=16), or use an adapter method (lora, qlora, ...)")
    return quantized


def apply_method(model, cfg):
    """Make `model` trainable as cfg.method says; returns the (possibly peft-wrapped) model.

    Checked before the model changes (ConfigError naming the field): cfg is a TrainConfig and still valid (a
    field changed after creation is checked again), model is a base model without an adapter, at the bit
    width the method needs, and it has what the method needs (LoRA's targets and a rank within their sizes,
    top_k's blocks, the adapter's width, BitFit's biases)."""
    if not isinstance(cfg, TrainConfig):
        raise ConfigError("cfg", cfg, "a TrainConfig (apply_method(model, cfg); TrainConfig(**params) makes one)")
    cfg.validate()  # a field set after creation (cfg.lora_r = -1) is refused here, not deep inside peft
    check_model(model)
    carried = adapter_on(model)
    if carried:
        raise ConfigError("model", type(model).__name__, f"a base model without an adapter; this one already carries "
                          f"a {carried} adapter (apply_method was called on it before); load the base again "
                          "(load_for(cfg) or load_model(...))")
    method = METHODS[cfg.method]
    quantized = _check_bits(cfg, model, method)
    method.fits(cfg, model)
    if quantized:
        # on a CPU, bitsandbytes would switch 4-bit layers to a kernel without backward at the first evaluation
        quant.keep_4bit_trainable(model)
        # upcasts the non-quantised parameters (norms, embeddings) to fp32 for stable training
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    if method.peft_config is not None:
        return peft.get_peft_model(model, method.peft_config(cfg, model))
    method.freeze(cfg, model)
    return model


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts, as the model holds them."""
    check_model(model, what="trainable_parameters(model)")
    total = trainable = 0
    for p in model.parameters():
        n = p.numel()
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def _arch_of(cfg, arch, model_must_resolve: bool):
    """check_setup's architecture: given, or read from cfg.model (None when it cannot be read and need not be)."""
    if arch is not None:
        return as_arch(arch)
    try:
        return resolve_arch(cfg.model)
    except Exception:  # an unknown hub id offline: load_model will say so with the full story
        if model_must_resolve:  # a model that cannot be found is refused here; one that is found but whose
            resolve_source(cfg.model, weights=False, trust_remote_code=cfg.trust_remote_code)  # numbers ftlab
        return None                                                                           # cannot read is not


def check_setup(cfg, arch=None, *, model_must_resolve: bool = False):
    """Checks that need the model's shape (config validation can't know it). Raises ConfigError naming the
    field. `arch`: an ftlab.models.Arch, or a preset name, hub id, folder or config that resolve_arch reads; by
    default resolved from cfg.model, and skipped if that can't be read (load_model says why, with the whole
    story); with `model_must_resolve` (the panel), a model that cannot be found (not a preset, a folder or, offline,
    a cached hub id) raises ModelNotFoundError at once."""
    if not isinstance(cfg, TrainConfig):
        raise ConfigError("cfg", cfg, "a TrainConfig (check_setup(cfg); TrainConfig(**params) makes one)")
    cfg.validate()
    arch = _arch_of(cfg, arch, model_must_resolve)
    if cfg.effective_bits in (8, 4):
        ok, why = quant.bitsandbytes_available()  # through the module: a test can stand in for it
        if not ok:
            raise ConfigError("bits", cfg.effective_bits, f"16 or 32 on this machine: {why}")
    if arch is None:
        return
    method = METHODS[cfg.method]
    if method.fits_arch:
        method.fits_arch(arch, _Sizes(cfg))
    virtual = cfg.num_virtual_tokens if method.virtual_tokens else 0
    if cfg.seq_len + virtual > arch.max_positions:
        raise ConfigError("seq_len", cfg.seq_len, f"at most {arch.max_positions - virtual} for this model")


class _Sizes:
    """A TrainConfig's method sizes as ftlab.shapes reads them."""

    def __init__(self, cfg):
        self.lora_r, self.lora_targets = cfg.lora_r, cfg.target_modules
        self.adapter_size, self.top_k_layers = cfg.adapter_size, cfg.top_k_layers
        self.num_virtual_tokens = cfg.num_virtual_tokens


__all__ = ["FAMILIES", "METHODS", "METHOD_KNOBS", "Method", "adapter_on", "apply_method", "check_model", "check_setup",
           "register_method", "trainable_parameters"]
