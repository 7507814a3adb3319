"""How each method is put on a loaded model: a peft config (peft does the work), selective freezing (BitFit,
top-k layers), or ftlab's Houlsby adapter (ftlab.adapters, the one method peft lacks). The rows of
ftlab.method_table point at these functions; ftlab.methods.apply_method calls them.

Each `*_config(cfg, model)` returns a peft config; each `freeze_*(cfg, model)` sets requires_grad itself;
each `fits_*(cfg, model)` checks the method's sizes against the model's own layers before anything changes
(the same checks as the calculator's, ftlab.shapes, which asks the architecture numbers).

torch, peft and ftlab.adapters (torch modules) are imported when a method is put on a model, not when this
module loads: the method table imports it, and the table, the config and the calculator run without torch.
"""
from __future__ import annotations

import warnings

from ftlab.choices import TARGET_SHORTCUTS
from ftlab.errors import ConfigError
from ftlab.shapes import check_adapter_size, check_bitfit, check_rank, check_top_k

# peft 0.21 calls transformers 5's renamed checkpointing API; the warning is theirs, not the user's
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def _torch():
    import torch  # lazy: the method table (and through it the calculator) loads without torch
    return torch


def _peft():
    import peft  # lazy: the method table (and through it the calculator) loads without peft and torch
    return peft


def _adapters():
    import ftlab.adapters  # lazy: torch modules; the method table loads without torch
    return ftlab.adapters


# the new output layer of a ...ForSequenceClassification model (BERT's "classifier", a decoder's "score")
HEAD_NAMES = ("classifier", "score")


def classification_head(model) -> list[str]:
    """Names of the classification head's modules when `model` is a ...ForSequenceClassification model, else [].
    Every method trains such a head (it starts random): peft keeps a trained copy (modules_to_save, which its
    SEQ_CLS task type sets up), the selective methods unfreeze it."""
    if not type(model).__name__.endswith("ForSequenceClassification"):
        return []
    return [n for n in HEAD_NAMES if isinstance(getattr(model, n, None), _torch().nn.Module)]


def task_type(model) -> str:
    """peft's task type: SEQ_CLS for a model with a classification head, else CAUSAL_LM."""
    return "SEQ_CLS" if classification_head(model) else "CAUSAL_LM"


def _train_head(model) -> None:
    for name in classification_head(model):
        for p in getattr(model, name).parameters():
            p.requires_grad = True


def linear_layers(model) -> dict:
    """{module name: (in_features, out_features)} of the model's linear layers (bitsandbytes' too), the output
    layer (LM head, or a classification head) left out as peft's "all-linear" leaves it out."""
    head = model.get_output_embeddings() if callable(getattr(model, "get_output_embeddings", None)) else None
    heads = set(classification_head(model))
    out = {}
    for name, m in model.named_modules():
        if m is head or name.split(".")[0] in heads or not (isinstance(m, _torch().nn.Linear) or type(m).__name__.startswith("Linear")):
            continue
        i, o = getattr(m, "in_features", None), getattr(m, "out_features", None)
        if isinstance(i, int) and isinstance(o, int):
            out[name] = (i, o)
    return out


def check_targets(model, targets):
    """Target modules must exist in the model; say which do when they don't (ConfigError, field lora_targets)."""
    if isinstance(targets, str):
        targets = TARGET_SHORTCUTS.get(targets, targets)
    if targets == "all-linear":
        return targets
    if isinstance(targets, str) or not isinstance(targets, (list, tuple)) or not targets:
        raise ConfigError("lora_targets", targets, f"one of {list(TARGET_SHORTCUTS)} or a non-empty list of "
                          "module names such as ['q_proj', 'v_proj']")
    linear = _torch().nn.Linear
    present = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                      if isinstance(m, linear) or type(m).__name__.startswith("Linear")})
    missing = [t for t in targets if t not in present]
    if missing:
        raise ConfigError("lora_targets", list(targets), f"module names this model has: it has no module named "
                          f"{missing}; its linear modules are {present}")
    return list(targets)


def blocks(model, name: str):
    """The transformer blocks (an nn.ModuleList), wherever the architecture keeps them."""
    for path, mod in model.named_modules():
        if (isinstance(mod, _torch().nn.ModuleList) and path.endswith(("layers", "layer")) and len(mod)
                and "Layer" in type(mod[0]).__name__):
            return mod
    raise ConfigError("method", name, f"a method this model can train: {name} could not find its list of "
                      "transformer blocks (an nn.ModuleList named '...layers' or '...layer' of '...Layer' modules)")


# --- peft configs ----------------------------------------------------------------------------------------------

def lora_config(cfg, model, use_dora: bool = False):
    return _peft().LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                           target_modules=check_targets(model, cfg.target_modules), use_dora=use_dora,
                           task_type=task_type(model))


def dora_config(cfg, model):
    return lora_config(cfg, model, use_dora=True)


def loha_config(cfg, model):
    """LoHa (Hyeon-Woo et al., 2022): ΔW = (B1·A1) ⊙ (B2·A2), two rank-r pairs whose Hadamard product can reach
    rank r² with the parameters of two LoRAs."""
    return _peft().LoHaConfig(r=cfg.lora_r, alpha=cfg.lora_alpha, rank_dropout=cfg.lora_dropout,
                           target_modules=check_targets(model, cfg.target_modules), task_type=task_type(model))


def ia3_config(cfg, model):
    # IA3 rescales keys, values and the MLP's down-projection input (Liu et al., 2022); a model without
    # Llama's names (BERT: key, value, output.dense) gets peft's own choice for its model type
    if not any(n.endswith(".k_proj") for n, _ in model.named_modules()):
        return _peft().IA3Config(task_type=task_type(model))
    return _peft().IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"],
                          task_type=task_type(model))


def prompt_tuning_config(cfg, model):
    if cfg.prompt_init_text:  # initialise the virtual tokens from a real prompt's embeddings (Lester et al., 2021)
        return _peft().PromptTuningConfig(task_type=task_type(model), num_virtual_tokens=cfg.num_virtual_tokens,
                                       prompt_tuning_init=_peft().PromptTuningInit.TEXT,
                                       prompt_tuning_init_text=cfg.prompt_init_text,
                                       tokenizer_name_or_path=model.name_or_path)
    return _peft().PromptTuningConfig(task_type=task_type(model), num_virtual_tokens=cfg.num_virtual_tokens)


def prefix_tuning_config(cfg, model):
    return _peft().PrefixTuningConfig(task_type=task_type(model), num_virtual_tokens=cfg.num_virtual_tokens)


def p_tuning_config(cfg, model):
    return _peft().PromptEncoderConfig(task_type=task_type(model), num_virtual_tokens=cfg.num_virtual_tokens,
                                    encoder_hidden_size=model.config.hidden_size)


def ln_tuning_config(cfg, model):
    # the norms of a Llama-style block and the final norm (peft trains a copy of each); BERT's are "LayerNorm"
    llama = any(n.endswith("input_layernorm") for n, _ in model.named_modules())
    return _peft().LNTuningConfig(task_type=task_type(model), target_modules=[
        "input_layernorm", "post_attention_layernorm", "norm"] if llama else ["LayerNorm"])


# --- methods that set requires_grad themselves -----------------------------------------------------------------

def train_all(cfg, model):
    for p in model.parameters():
        p.requires_grad = True


def freeze_but_biases(cfg, model):
    """BitFit (Ben Zaken et al., 2022): train the bias terms only (and a classification head, which is new)."""
    for n, p in model.named_parameters():
        p.requires_grad = n.endswith(".bias")
    _train_head(model)


def freeze_but_top_k(cfg, model):
    """Freeze everything but the last k blocks (the 'train the top layers' baseline of Lee et al., 2019)."""
    for p in model.parameters():
        p.requires_grad = False
    for block in blocks(model, cfg.method)[-cfg.top_k_layers:]:
        for p in block.parameters():
            p.requires_grad = True
    _train_head(model)


def add_bottlenecks(cfg, model):
    _adapters().add_adapters(model, cfg.adapter_size, method=cfg.method)
    _train_head(model)


# --- what a method needs of the model's own layers -------------------------------------------------------------

def fits_low_rank(cfg, model) -> None:
    targets = check_targets(model, cfg.target_modules)
    dims = {n: d for n, d in linear_layers(model).items() if targets == "all-linear" or n.rsplit(".", 1)[-1] in targets}
    if dims:
        check_rank(cfg.lora_r, dims)


def fits_top_k(cfg, model) -> None:
    check_top_k(cfg.top_k_layers, len(blocks(model, cfg.method)))


def fits_adapter(cfg, model) -> None:
    targets = _adapters().adapter_targets(model, method=cfg.method)
    check_adapter_size(cfg.adapter_size, min(m.out_features for _, m in targets))


def fits_biases(cfg, model) -> None:
    check_bitfit(any(n.endswith(".bias") for n, _ in model.named_parameters()), cfg.method)


def fits_any(cfg, model) -> None:
    return None
