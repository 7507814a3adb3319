"""What a method trains on an architecture, and whether its sizes fit it: trainable-parameter counts as peft
counts them (the calculator's), and the checks of rank, top-k, adapter width and BitFit against the model's
shape (the calculator, check_setup and apply_method share them). Pure arithmetic on ftlab.models.Arch.
"""
from __future__ import annotations

METHODS = ("inference", "full", "lora", "qlora", "dora", "ia3", "prompt_tuning", "prefix_tuning", "p_tuning",
           "bitfit", "ln_tuning", "top_k", "adapter")


def _err(name, value, allowed):
    from ftlab.errors import ConfigError
    return ConfigError(name, value, allowed)


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# Architectures the calculator must not take for a decoder: an encoder has no causal LM head and attends both
# ways; an encoder-decoder has two stacks. Estimating them with the decoder formula would give a wrong number.
NOT_DECODERS = ("bert", "roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2", "xlm-roberta",
                "mpnet", "camembert", "modernbert", "t5", "mt5", "bart", "mbart", "pegasus", "whisper")


def _refuse_non_decoder(model) -> None:
    """A config (object, dict, or a local folder's config.json) of an encoder or encoder-decoder is refused."""
    import json
    import os
    d = None
    if isinstance(model, dict):
        d = model
    elif hasattr(model, "to_dict") and not isinstance(model, (str, os.PathLike)):
        d = model.to_dict()
    elif isinstance(model, (str, os.PathLike)):
        path = os.path.join(os.path.expanduser(str(model)), "config.json")
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    d = json.load(f)
            except (OSError, ValueError):
                d = None  # resolve_arch reads it again and says what is wrong
    if not isinstance(d, dict):
        return
    kind = d.get("model_type")
    if kind in NOT_DECODERS or d.get("is_encoder_decoder"):
        raise _err("model", kind or model, "a decoder-only causal language model (Llama, Qwen2, Gemma, Mistral, ...): "
                   f"this config is {'an encoder-decoder' if d.get('is_encoder_decoder') else 'an encoder'} "
                   f"({kind!r}), whose memory the decoder formula would misstate")


def _err_if_not_strings(targets):
    from ftlab.errors import check_strings
    return check_strings("lora_targets", targets)


def as_arch(value, field: str = "arch"):
    """An ftlab.models.Arch as given, or read by resolve_arch from a preset name, hub id, local folder or
    transformers config (or its dict); anything else is refused with ConfigError naming `field`."""
    import os

    from ftlab.models import Arch, resolve_arch
    if isinstance(value, Arch):
        return value
    if isinstance(value, (str, os.PathLike, dict)) or callable(getattr(value, "to_dict", None)):
        return resolve_arch(value)
    hint = " (for a loaded model: resolve_arch(model.config))" if hasattr(value, "config") else ""
    raise _err(field, value if value is None or isinstance(value, (int, float, list, tuple)) else
               f"a {type(value).__name__}", "an ftlab.models.Arch, or a preset name, hub id, local folder or "
               f"transformers config that resolve_arch reads{hint}")


# --- what needs the model's shape: one check each, fed by an Arch (the calculator, check_setup) or by a
# loaded model's own layers (ftlab.methods.apply_method, ftlab.adapters) -------------------------------------

def check_rank(lora_r: int, dims: dict) -> None:
    """LoRA's rank at most the smallest dimension of the targeted layers. dims: {name: (in, out)}."""
    smallest = min(min(d) for d in dims.values())
    if lora_r > smallest:
        raise _err("lora_r", lora_r, f"at most {smallest}, the smallest dimension of the targeted layers "
                   "(a rank above it adds parameters but no expressiveness)")


def check_top_k(top_k_layers: int, blocks: int) -> None:
    if top_k_layers > blocks:
        raise _err("top_k_layers", top_k_layers, f"an integer from 1 to {blocks} (the model's blocks)")


def check_adapter_size(adapter_size: int, hidden: int) -> None:
    if adapter_size > hidden:
        raise _err("adapter_size", adapter_size, f"an integer from 1 to {hidden} (the hidden size)")


def check_bitfit(has_biases: bool) -> None:
    if not has_biases:
        raise _err("method", "bitfit", "a method this model can train: it has no bias terms (Llama-style models "
                   "such as SmolLM2 have none), so BitFit would train nothing; method='ln_tuning' trains only the "
                   "norms (the nearest selective method), or use a model with biases (e.g. qwen2.5-0.5b-instruct)")


def check_shape(arch, method: str, lora_r: int = 16, lora_targets="all-linear", adapter_size: int = 64,
                top_k_layers: int = 2) -> list:
    """The settings that need the model's shape, checked against `arch` (ConfigError naming the field): LoRA's
    targets exist and its rank fits them, top_k within the blocks, the adapter within the hidden size, BitFit
    on a model with biases. Returns the LoRA modules targeted (lora, qlora, dora), else []."""
    mods = []
    if method in ("lora", "qlora", "dora"):
        shapes = arch.linear_shapes()
        mods = _targets(lora_targets, shapes)
        check_rank(lora_r, {m: shapes[m] for m in mods})
    elif method == "top_k":
        check_top_k(top_k_layers, arch.layers)
    elif method == "adapter":
        check_adapter_size(adapter_size, arch.hidden)
    elif method == "bitfit":
        check_bitfit(arch.qkv_bias)
    return mods


def trainable_parameters(arch, method: str, lora_r: int = 16, lora_targets="all-linear",
                         num_virtual_tokens: int = 20, adapter_size: int = 64, top_k_layers: int = 2) -> int:
    """What the method trains, counted as peft (or ftlab, for top_k and adapter) counts it. `arch`: an
    ftlab.models.Arch, or a preset name, hub id, folder or config (read by resolve_arch)."""
    from ftlab.errors import check_choice, check_int
    method = check_choice("method", method, METHODS)
    lora_r = check_int("lora_r", lora_r, 1)
    num_virtual_tokens = check_int("num_virtual_tokens", num_virtual_tokens, 1)
    adapter_size = check_int("adapter_size", adapter_size, 1)
    top_k_layers = check_int("top_k_layers", top_k_layers, 1)
    if not isinstance(lora_targets, str):
        lora_targets = _err_if_not_strings(lora_targets)
    arch = as_arch(arch)
    mods = check_shape(arch, method, lora_r, lora_targets, adapter_size, top_k_layers)
    shapes = arch.linear_shapes()
    if method == "inference":
        return 0
    if method == "full":
        return arch.n_params
    if method == "top_k":  # whole blocks: the n_params formula without embeddings and final norm
        return top_k_layers * _block_params(arch)
    if method == "adapter":  # two bottlenecks a block: down d→m and up m→d, with biases
        return arch.layers * 2 * (2 * arch.hidden * adapter_size + adapter_size + arch.hidden)
    if method == "ln_tuning":  # two RMSNorm scales a block and the final norm
        return (2 * arch.layers + 1) * arch.hidden
    if method in ("lora", "qlora", "dora"):
        n = sum(lora_r * (shapes[m][0] + shapes[m][1]) for m in mods)
        if method == "dora":  # a magnitude per output feature
            n += sum(shapes[m][1] for m in mods)
        return arch.layers * n
    if method == "ia3":  # a scale per key, value and MLP hidden feature
        return arch.layers * (shapes["k_proj"][1] + shapes["v_proj"][1] + arch.intermediate)
    if method == "prompt_tuning":
        return num_virtual_tokens * arch.hidden
    if method == "prefix_tuning":  # a key and a value per virtual token per layer (GQA: kv_heads wide)
        return num_virtual_tokens * arch.layers * 2 * arch.kv_heads * arch.hd
    if method == "p_tuning":  # virtual-token embeddings + peft's MLP prompt encoder (3 hidden×hidden layers)
        return num_virtual_tokens * arch.hidden + 3 * arch.hidden * arch.hidden + 3 * arch.hidden
    # bitfit (check_shape refused a model without biases)
    return arch.layers * (arch.heads + 2 * arch.kv_heads) * arch.hd


def _block_params(arch) -> int:
    emb = arch.vocab * arch.hidden * (1 if arch.tied_embeddings else 2)
    return (arch.n_params - emb - arch.hidden) // arch.layers


def _targets(lora_targets, shapes) -> list:
    """LoRA's target modules as a list: a TrainConfig shortcut ("q", "q,v", "q,k,v,o", "all-linear"), module
    names separated by commas, or a list of them; each must be one of the model's linear layers."""
    from ftlab.config import TARGET_SHORTCUTS
    given = lora_targets
    if isinstance(lora_targets, str):
        short = TARGET_SHORTCUTS.get(lora_targets)
        if short == "all-linear":
            return list(LORA_TARGETS)
        lora_targets = list(short) if short else [t.strip() for t in lora_targets.split(",")]
    lora_targets = list(lora_targets)
    if not lora_targets or not all(lora_targets):
        raise _err("lora_targets", given, f"one of {list(TARGET_SHORTCUTS)} or a non-empty list of module names "
                   f"such as ['q_proj', 'v_proj']")
    missing = [t for t in lora_targets if t not in shapes]
    if missing:
        raise _err("lora_targets", given, f"one of {list(TARGET_SHORTCUTS)} or module names this model has (it has "
                   f"no module named {missing}): its linear layers are {list(shapes)}")
    return lora_targets
