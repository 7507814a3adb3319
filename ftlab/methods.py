"""Fine-tuning methods: a table, one row a method. Adding a method is one row.

Each row knows its place in the taxonomy (Lialin et al., 2023: additive / selective /
reparameterisation), the name the memory calculator uses, and how to apply itself to a loaded model:
a peft config (peft does the work) or selective freezing (BitFit). QLoRA is LoRA on a 4-bit base.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

# peft 0.21 calls transformers 5's renamed checkpointing API; the warning is theirs, not the user's
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


@dataclass(frozen=True)
class Method:
    name: str
    family: str                       # "full", "additive", "selective" or "reparameterisation"
    summary: str
    memory_name: str                  # the name estimate_memory() takes
    peft_config: Callable | None = None   # (cfg, model) -> peft config
    freeze: Callable | None = None        # (model) -> None: selective methods set requires_grad themselves
    needs_bits: int | None = None         # QLoRA: the base must be 4-bit


def _lora(cfg, model, dora=False):
    from peft import LoraConfig
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=check_targets(model, cfg.target_modules), use_dora=dora, task_type="CAUSAL_LM")


def _ia3(cfg, model):
    from peft import IA3Config
    # IA3 rescales keys, values and the MLP's down-projection input (Liu et al., 2022)
    return IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"],
                     task_type="CAUSAL_LM")


def _prompt_tuning(cfg, model):
    from peft import PromptTuningConfig, PromptTuningInit
    text = cfg.extra.get("init_text")
    if text:  # initialise the virtual tokens from a real prompt's embeddings (Lester et al., 2021, §3.2)
        return PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=cfg.num_virtual_tokens,
                                  prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=text,
                                  tokenizer_name_or_path=model.name_or_path)
    return PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=cfg.num_virtual_tokens)


def _prefix_tuning(cfg, model):
    from peft import PrefixTuningConfig
    return PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=cfg.num_virtual_tokens)


def _p_tuning(cfg, model):
    from peft import PromptEncoderConfig
    return PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=cfg.num_virtual_tokens,
                               encoder_hidden_size=model.config.hidden_size)


def _bitfit(model):
    """BitFit (Ben Zaken et al., 2022): train the bias terms only."""
    names = [n for n, p in model.named_parameters() if n.endswith(".bias")]
    if not names:
        raise ValueError("method='bitfit': this model has no bias terms (Llama-style models have none), so BitFit "
                         "would train nothing. Use method='lora', or a model with biases (e.g. Qwen2.5).")
    for n, p in model.named_parameters():
        p.requires_grad = n.endswith(".bias")


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("full", "full", "every weight is trained", "full"),
    Method("lora", "reparameterisation", "W + (alpha/r)·B·A with rank-r A, B on the chosen linear layers", "lora",
           peft_config=_lora),
    Method("dora", "reparameterisation", "LoRA on the direction, a learned magnitude per column", "dora",
           peft_config=lambda c, m: _lora(c, m, dora=True)),
    Method("qlora", "reparameterisation", "LoRA on a 4-bit NF4 base, adapters in higher precision", "qlora",
           peft_config=_lora, needs_bits=4),
    Method("ia3", "additive", "learned vectors rescale keys, values and MLP activations", "ia3", peft_config=_ia3),
    Method("prompt_tuning", "additive", "learned virtual-token embeddings before the input", "prompt_tuning",
           peft_config=_prompt_tuning),
    Method("prefix_tuning", "additive", "learned keys and values prepended in every layer", "prefix_tuning",
           peft_config=_prefix_tuning),
    Method("p_tuning", "additive", "virtual tokens produced by a small prompt encoder (MLP)", "p_tuning",
           peft_config=_p_tuning),
    Method("bitfit", "selective", "only the bias terms are trained", "bitfit", freeze=_bitfit),
]}


def check_targets(model, targets):
    """Target modules must exist in the model; say which do when they don't."""
    if targets == "all-linear":
        return targets
    import torch
    present = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
                     | {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__.startswith("Linear")})
    missing = [t for t in targets if t not in present]
    if missing:
        raise ValueError(f"lora_targets={list(targets)!r}: the model has no module named {missing}; "
                         f"its linear modules are {present}")
    return list(targets)


def apply_method(model, cfg):
    """Make `model` trainable as cfg.method says; returns the (possibly peft-wrapped) model."""
    method = METHODS.get(cfg.method)
    if method is None:
        raise ValueError(f"method={cfg.method!r} is not allowed: one of {list(METHODS)}")
    quantized = getattr(model, "is_quantized", False) or getattr(model, "is_loaded_in_4bit", False)
    if method.needs_bits and not quantized:
        raise ValueError(f"method={cfg.method!r} needs the base loaded with bits={method.needs_bits} "
                         f"(load_model(..., bits={method.needs_bits}))")
    if quantized:
        if method.peft_config is None:
            raise ValueError(f"method={cfg.method!r} cannot train a quantized base: use bits=16 or 32")
        from peft import prepare_model_for_kbit_training
        # upcasts the non-quantised parameters (norms, embeddings) to fp32 for stable training
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    if method.peft_config is not None:
        from peft import get_peft_model
        return get_peft_model(model, method.peft_config(cfg, model))
    if method.freeze is not None:
        method.freeze(model)
    else:
        for p in model.parameters():
            p.requires_grad = True
    return model


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts, as the model holds them."""
    total = trainable = 0
    for p in model.parameters():
        n = p.numel()
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total
