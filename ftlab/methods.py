"""Fine-tuning methods: a table, one row a method. Adding a method is one row.

Each row knows its place in the taxonomy (Lialin et al., 2023: additive / selective /
reparameterisation), the name the memory calculator uses (and so its trainable-parameter count,
`Method.trainable_count`), and how to apply itself to a loaded model: a peft config (peft does the
work), selective freezing (BitFit, top-k layers), or, for the Houlsby adapter that peft lacks,
ftlab.adapters. QLoRA is LoRA on a 4-bit base; LoRA on an 8-bit base is `lora` with bits=8.

`save_trained` / `load_trained` store what a method trained as safetensors and bring it back.
"""
from __future__ import annotations

import os
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
    freeze: Callable | None = None        # (cfg, model) -> None: methods that set requires_grad themselves
    needs_bits: int | None = None         # QLoRA: the base must be 4-bit
    lr: float = 5e-4                      # a typical starting learning rate (from the method's paper / peft's examples)
    # before any step the model computes exactly what its base computes (LoRA's B and DoRA's update start at 0,
    # IA3's scales at 1; selective methods change nothing): a comparison scores such bases once
    starts_as_base: bool = False
    # the TrainConfig fields that shape this method (the panel shows only these of the method-specific ones)
    knobs: tuple[str, ...] = ()
    # trains the base model's own weights (all, or some of them): they cannot be quantised (no 8/4-bit base)
    trains_base: bool = False
    # peft's name for the adapter this method makes (its PeftConfig.peft_type), None for ftlab's own methods:
    # how a saved adapter or a checkpoint tells which method wrote it
    peft_type: str | None = None

    def trainable_count(self, cfg, model) -> int:
        """Parameters this method trains on `model` (a preset, hub id, folder or config), as peft counts them."""
        from ftlab.memory import trainable_parameters
        from ftlab.models import resolve_arch
        return trainable_parameters(resolve_arch(model), self.memory_name, cfg.lora_r, cfg.target_modules,
                                    cfg.num_virtual_tokens, adapter_size=cfg.adapter_size,
                                    top_k_layers=cfg.top_k_layers)


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
    text = cfg.prompt_init_text
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


def _ln_tuning(cfg, model):
    from peft import LNTuningConfig
    # the norms of a Llama-style block and the final norm (peft trains a copy of each)
    return LNTuningConfig(task_type="CAUSAL_LM", target_modules=["input_layernorm", "post_attention_layernorm", "norm"])


def _bitfit(cfg, model):
    """BitFit (Ben Zaken et al., 2022): train the bias terms only."""
    from ftlab.shapes import check_bitfit
    check_bitfit(any(n.endswith(".bias") for n, _ in model.named_parameters()))
    for n, p in model.named_parameters():
        p.requires_grad = n.endswith(".bias")


def _blocks(model):
    """The transformer blocks (an nn.ModuleList), wherever the architecture keeps them."""
    import torch
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and name.endswith("layers") and len(mod) and "Layer" in type(mod[0]).__name__:
            return mod
    from ftlab.errors import ConfigError
    raise ConfigError("method", "top_k", "a method this model can train: top_k could not find its list of "
                      "transformer blocks (an nn.ModuleList named '...layers' of '...Layer' modules)")


def _top_k(cfg, model):
    """Freeze everything but the last k blocks (the 'train the top layers' baseline of Lee et al., 2019)."""
    from ftlab.shapes import check_top_k
    blocks = _blocks(model)
    check_top_k(cfg.top_k_layers, len(blocks))
    for p in model.parameters():
        p.requires_grad = False
    for block in blocks[-cfg.top_k_layers:]:
        for p in block.parameters():
            p.requires_grad = True


def _adapter(cfg, model):
    from ftlab.adapters import add_adapters
    add_adapters(model, cfg.adapter_size)


_LORA_KNOBS = ("lora_r", "lora_alpha", "lora_targets")

METHODS: dict[str, Method] = {m.name: m for m in [
    Method("full", "full", "every weight is trained", "full", lr=5e-5, starts_as_base=True, trains_base=True),
    Method("lora", "reparameterisation", "W + (alpha/r)·B·A with rank-r A, B on the chosen linear layers", "lora",
           peft_config=_lora, starts_as_base=True, knobs=_LORA_KNOBS, peft_type="LORA"),
    Method("dora", "reparameterisation", "LoRA on the direction, a learned magnitude per column", "dora",
           peft_config=lambda c, m: _lora(c, m, dora=True), starts_as_base=True, knobs=_LORA_KNOBS, peft_type="LORA"),
    Method("qlora", "reparameterisation", "LoRA on a 4-bit NF4 base, adapters in higher precision", "qlora",
           peft_config=_lora, needs_bits=4, starts_as_base=True, knobs=_LORA_KNOBS, peft_type="LORA"),
    Method("ia3", "additive", "learned vectors rescale keys, values and MLP activations", "ia3", peft_config=_ia3,
           lr=5e-3, starts_as_base=True, peft_type="IA3"),
    Method("prompt_tuning", "additive", "learned virtual-token embeddings before the input", "prompt_tuning",
           peft_config=_prompt_tuning, lr=3e-2, knobs=("num_virtual_tokens",), peft_type="PROMPT_TUNING"),
    Method("prefix_tuning", "additive", "learned keys and values prepended in every layer", "prefix_tuning",
           peft_config=_prefix_tuning, lr=1e-2, knobs=("num_virtual_tokens",), peft_type="PREFIX_TUNING"),
    # p-tuning at 5e-3 diverged (val loss 4.88 -> 5.43 in 4 steps, SmolLM2, definitions, seed 0); 1e-3: 4.47
    Method("p_tuning", "additive", "virtual tokens produced by a small prompt encoder (MLP)", "p_tuning",
           peft_config=_p_tuning, lr=1e-3, knobs=("num_virtual_tokens",), peft_type="P_TUNING"),
    Method("bitfit", "selective", "only the bias terms are trained", "bitfit", freeze=_bitfit, lr=1e-3,
           starts_as_base=True, trains_base=True),
    Method("ln_tuning", "selective", "only the layer norms' scales are trained", "ln_tuning", peft_config=_ln_tuning,
           lr=5e-3, starts_as_base=True, peft_type="LN_TUNING"),
    Method("top_k", "selective", "all but the last k transformer blocks frozen", "top_k", freeze=_top_k, lr=1e-4,
           starts_as_base=True, knobs=("top_k_layers",), trains_base=True),
    Method("adapter", "additive", "Houlsby bottleneck adapters after attention and MLP (down, GELU, up, residual)",
           "adapter", freeze=_adapter, lr=1e-3, knobs=("adapter_size",)),
]}
# every method-specific field, in the table's order
METHOD_KNOBS: tuple[str, ...] = tuple(dict.fromkeys(k for m in METHODS.values() for k in m.knobs))


def _linear_layers(model) -> dict:
    """{module name: (in_features, out_features)} of the model's linear layers (bitsandbytes' too), the output
    layer (LM head) left out as peft's "all-linear" leaves it out."""
    import torch
    head = model.get_output_embeddings() if callable(getattr(model, "get_output_embeddings", None)) else None
    out = {}
    for name, m in model.named_modules():
        if m is head or not (isinstance(m, torch.nn.Linear) or type(m).__name__.startswith("Linear")):
            continue
        i, o = getattr(m, "in_features", None), getattr(m, "out_features", None)
        if isinstance(i, int) and isinstance(o, int):
            out[name] = (i, o)
    return out


def check_targets(model, targets):
    """Target modules must exist in the model; say which do when they don't (ConfigError, field lora_targets)."""
    from ftlab.config import TARGET_SHORTCUTS
    from ftlab.errors import ConfigError
    if isinstance(targets, str):
        targets = TARGET_SHORTCUTS.get(targets, targets)
    if targets == "all-linear":
        return targets
    if isinstance(targets, str) or not isinstance(targets, (list, tuple)) or not targets:
        raise ConfigError("lora_targets", targets, f"one of {list(TARGET_SHORTCUTS)} or a non-empty list of "
                          "module names such as ['q_proj', 'v_proj']")
    import torch
    present = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
                     | {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__.startswith("Linear")})
    missing = [t for t in targets if t not in present]
    if missing:
        raise ConfigError("lora_targets", list(targets), f"module names this model has: it has no module named "
                          f"{missing}; its linear modules are {present}")
    return list(targets)


def _adapter_on(model) -> str | None:
    """What adapter `model` already carries ("LORA", "PROMPT_TUNING", "Houlsby", ...), or None: a peft model, a base
    whose layers peft injected (the base of an earlier apply_method), or ftlab's own bottleneck adapters."""
    import sys
    if hasattr(model, "peft_config"):
        kinds = {str(getattr(getattr(c, "peft_type", None), "value", getattr(c, "peft_type", "?"))).upper()
                 for c in model.peft_config.values()} if isinstance(model.peft_config, dict) else {"peft"}
        return "/".join(sorted(kinds))
    tuners = sys.modules.get("peft.tuners.tuners_utils")  # not imported: peft has injected nothing
    from ftlab.adapters import AdaptedLinear
    for m in model.modules():
        if tuners is not None and isinstance(m, tuners.BaseTunerLayer):  # peft.tuners.<kind>.layer.Linear
            parts = type(m).__module__.split(".")
            kind = parts[2].upper() if len(parts) > 2 and parts[:2] == ["peft", "tuners"] else "peft"
            return f"{kind} (peft, injected into this base)"
        if isinstance(m, AdaptedLinear):
            return "Houlsby bottleneck (method='adapter')"
    return None


def _check_model(model, field: str = "model", what: str = "apply_method(model, cfg)"):
    """A torch model; a (model, tokenizer) pair is answered with how to unpack it."""
    import torch

    from ftlab.errors import ConfigError
    if isinstance(model, tuple):
        raise ConfigError(field, f"a tuple of {len(model)}", f"the model alone: model, tokenizer = load_model(...) "
                          f"(or load_for(cfg)), then {what}")
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(field, model if model is None or isinstance(model, (str, int, float, bool)) else
                          f"a {type(model).__name__}", "a transformers model (load_model or load_for returns one)")
    return model


def _check_fits(cfg, model, method) -> None:
    """What the method needs of this model, asked of its own layers before anything on it changes (the same
    checks as the calculator's, ftlab.shapes.check_shape, which asks the architecture numbers)."""
    from ftlab.shapes import check_adapter_size, check_bitfit, check_rank, check_top_k
    if method.name in ("lora", "qlora", "dora"):
        targets = check_targets(model, cfg.target_modules)
        layers = _linear_layers(model)
        dims = {n: d for n, d in layers.items() if targets == "all-linear" or n.rsplit(".", 1)[-1] in targets}
        if dims:
            check_rank(cfg.lora_r, dims)
    elif method.name == "top_k":
        check_top_k(cfg.top_k_layers, len(_blocks(model)))
    elif method.name == "adapter":
        from ftlab.adapters import adapter_targets
        check_adapter_size(cfg.adapter_size, min(m.out_features for _, m in adapter_targets(model)))
    elif method.name == "bitfit":
        check_bitfit(any(n.endswith(".bias") for n, _ in model.named_parameters()))


def apply_method(model, cfg):
    """Make `model` trainable as cfg.method says; returns the (possibly peft-wrapped) model.

    Checked before the model changes (ConfigError naming the field): cfg is a TrainConfig and still valid (a
    field changed after creation is checked again), model is a base model without an adapter, at the bit
    width the method needs, and it has what the method needs (LoRA's targets and a rank within their sizes,
    top_k's blocks, the adapter's width, BitFit's biases)."""
    from ftlab.config import TrainConfig
    from ftlab.errors import ConfigError
    if not isinstance(cfg, TrainConfig):
        raise ConfigError("cfg", cfg, "a TrainConfig (apply_method(model, cfg); TrainConfig(**params) makes one)")
    cfg.validate()  # a field set after creation (cfg.lora_r = -1) is refused here, not deep inside peft
    _check_model(model)
    carried = _adapter_on(model)
    if carried:
        raise ConfigError("model", type(model).__name__, f"a base model without an adapter; this one already carries "
                          f"a {carried} adapter (apply_method was called on it before); load the base again "
                          "(load_for(cfg) or load_model(...))")
    method = METHODS[cfg.method]
    quantized = getattr(model, "is_quantized", False) or getattr(model, "is_loaded_in_4bit", False)
    if method.needs_bits and not quantized:
        raise ConfigError("bits", cfg.effective_bits, f"a base loaded at {method.needs_bits} bits for "
                          f"method={cfg.method!r}: this model's weights are not quantised; load it with "
                          f"load_model(..., bits={method.needs_bits}) or load_for(cfg)")
    if quantized and method.trains_base:
        raise ConfigError("bits", (getattr(model, "ftlab_info", None) or {}).get("bits", "4 or 8"),
                          f"16 or 32 for the base of method={cfg.method!r}: this model's weights are quantised, "
                          "and quantised weights cannot be trained directly; load the base at 16 or 32 bits "
                          "(load_for(cfg) with bits=16), or use an adapter method (lora, qlora, ...)")
    _check_fits(cfg, model, method)
    if quantized:
        from peft import prepare_model_for_kbit_training

        from ftlab.quant import keep_4bit_trainable
        # on a CPU, bitsandbytes would switch 4-bit layers to a kernel without backward at the first evaluation
        keep_4bit_trainable(model)
        # upcasts the non-quantised parameters (norms, embeddings) to fp32 for stable training
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    if method.peft_config is not None:
        from peft import get_peft_model
        return get_peft_model(model, method.peft_config(cfg, model))
    if method.freeze is not None:
        method.freeze(cfg, model)
    else:
        for p in model.parameters():
            p.requires_grad = True
    return model


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts, as the model holds them."""
    _check_model(model, what="trainable_parameters(model)")
    total = trainable = 0
    for p in model.parameters():
        n = p.numel()
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def _trained_tensors(model) -> dict:
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def save_trained(model, folder, cfg) -> str:
    """Save what `cfg.method` trained, as safetensors only, atomically (a killed save leaves the old folder).

    peft methods: peft's adapter folder. full: the whole model (transformers' safetensors). BitFit, top-k,
    Houlsby adapters: the trained tensors in `trained.safetensors` plus `ftlab_method.json` with the config.
    """
    import json

    import torch
    from safetensors.torch import save_file

    from ftlab.config import TrainConfig
    from ftlab.errors import ConfigError
    from ftlab.checkpoints import _folder_arg
    from ftlab.saved import base_record, check_applied
    from ftlab.results import atomic_dir
    if not isinstance(cfg, TrainConfig):
        raise ConfigError("cfg", cfg, "the run's TrainConfig (saved beside the weights; load_trained needs it)")
    if isinstance(model, tuple) and model and isinstance(model[0], torch.nn.Module):
        raise ConfigError("model", model, "the trained model alone, not a (model, tokenizer) pair")
    if not isinstance(model, torch.nn.Module):
        raise ConfigError("model", model, "the model apply_method returned (and training changed)")
    folder = _folder_arg(folder, what="where to save what the run trained")
    if os.path.isfile(folder):
        raise ConfigError("folder", folder, "a folder (this path is an existing file)")
    check_applied(model, cfg)
    with atomic_dir(folder) as tmp:
        if hasattr(model, "peft_config"):
            model.save_pretrained(tmp, safe_serialization=True)
        elif cfg.method == "full":
            model.save_pretrained(tmp, safe_serialization=True)
        else:
            save_file(_trained_tensors(model), os.path.join(tmp, "trained.safetensors"))
        with open(os.path.join(tmp, "ftlab_method.json"), "w") as f:
            json.dump({"method": cfg.method, "config": cfg.to_dict(), "base": base_record(model)}, f, indent=1)
    return str(folder)


def load_trained(base, folder):
    """The inverse of save_trained: `base` (as load_model returns it) with the trained parameters put back.

    Checked before anything is put on `base` (ftlab.saved.check_trained): the folder is one save_trained wrote,
    and every saved tensor fits the base (an adapter trained on another model is refused with CheckpointError
    naming `folder`, the model it was trained on, the given base and the first tensors that differ)."""
    from ftlab.errors import CheckpointError, FtlabError
    from ftlab.saved import check_trained, describe_base
    folder, _saved, cfg = check_trained(base, folder)
    if os.path.exists(os.path.join(folder, "adapter_config.json")):
        from peft import PeftModel, prepare_model_for_kbit_training
        if getattr(base, "is_quantized", False):  # as in training: norms and embeddings upcast to fp32
            base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
        try:
            return PeftModel.from_pretrained(base, folder)
        except (RuntimeError, ValueError, KeyError) as e:  # what check_trained could not foresee
            if isinstance(e, FtlabError):
                raise
            raise CheckpointError(f"folder={folder!r}: the adapter (trained on model={cfg.model!r}) could not be put "
                                  f"on the given base ({describe_base(base)}): {type(e).__name__}: {str(e)[:300]}. "
                                  "Load a fresh base (this one may be half-changed).", field="folder") from None
    if cfg.method == "full":  # the whole model was saved: `base` only gives the dtype, device and architecture
        import json
        from pathlib import Path

        from transformers import AutoModelForCausalLM

        from ftlab.models import ModelNotFoundError, arch_from_config, check_loading_info
        from ftlab.models.checks import _check_folder
        try:
            _check_folder(folder, Path(folder))
            mine = arch_from_config(base.config)
            theirs = arch_from_config(json.loads(open(os.path.join(folder, "config.json")).read()))
        except ModelNotFoundError as e:
            raise CheckpointError(f"folder={folder!r}: the saved model cannot be loaded: {e}", field="folder") from None
        differ = [f"{k}: saved {getattr(theirs, k)} vs base {getattr(mine, k)}"
                  for k in ("layers", "hidden", "intermediate", "heads", "kv_heads", "vocab")
                  if getattr(theirs, k) != getattr(mine, k)]
        if differ:
            raise CheckpointError(f"folder={folder!r}: this full fine-tune was trained on model={cfg.model!r}, another "
                                  f"architecture than the given base ({describe_base(base)}): {differ[:3]}. Load it "
                                  f"with its own base: load_trained(load_model({cfg.model!r})[0], folder).",
                                  field="folder")
        model, info = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True, dtype=base.dtype,
                                                           output_loading_info=True, ignore_mismatched_sizes=True)
        try:
            check_loading_info(folder, folder, info)
        except ModelNotFoundError as e:
            raise CheckpointError(f"folder={folder!r}: the saved model is incomplete: {e}", field="folder") from None
        return model.to(base.device)
    from safetensors.torch import load_file
    model = apply_method(base, cfg)
    missing = set(load_file(os.path.join(folder, "trained.safetensors"))) - {n for n, _ in model.named_parameters()}
    if missing:
        raise CheckpointError(f"folder={folder!r}: holds parameters the model lacks, e.g. {sorted(missing)[:3]} "
                              f"(trained on model={cfg.model!r}; the given base is {describe_base(base)})",
                              field="folder")
    model.load_state_dict(load_file(os.path.join(folder, "trained.safetensors"), device=str(base.device)), strict=False)
    return model


def nearest_vocabulary_tokens(model, tokenizer, k: int = 3, adapter: str = "default") -> list[dict]:
    """For each learned virtual token of a prompt-tuning model (peft), the k vocabulary tokens nearest to it by
    cosine similarity: {"virtual token", "nearest tokens", "cosine" (of the nearest)}.

    Computed on the CPU in fp32 whatever the model's device and dtype: peft hands the prompt back on the CPU
    (get_prompt_embedding_to_save) while the vocabulary stays where the model is (on a GPU the two met in one
    matmul and failed), and the vocabulary (49k x 576 for SmolLM2) is small enough for the CPU."""
    from ftlab.errors import ConfigError, check_int
    _check_model(model, what="nearest_vocabulary_tokens(model, tokenizer)")
    virtual = "prompt_tuning, prefix_tuning and p_tuning have virtual tokens; only prompt tuning's are vectors " \
              "of the vocabulary's embedding space, which nearest tokens need"
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, dict) or not callable(getattr(model, "get_prompt_embedding_to_save", None)):
        carried = _adapter_on(model)
        raise ConfigError("model", type(model).__name__, "a prompt-tuning model (apply_method with "
                          "method='prompt_tuning', or load_trained of such a run): this one carries "
                          f"{'a ' + carried + ' adapter' if carried else 'no adapter'}; {virtual}")
    if not isinstance(adapter, str) or adapter not in configs:
        raise ConfigError("adapter", adapter, f"one of {list(configs)} (the adapters this model carries)")
    kind = str(getattr(configs[adapter].peft_type, "value", configs[adapter].peft_type)).upper()
    if kind != "PROMPT_TUNING":
        raise ConfigError("model", type(model).__name__, f"a prompt-tuning model: its adapter {adapter!r} is "
                          f"{kind}; {virtual}")
    if not callable(getattr(tokenizer, "decode", None)):
        raise ConfigError("tokenizer", tokenizer if tokenizer is None else f"a {type(tokenizer).__name__}",
                          "the model's tokenizer (model, tokenizer = load_model(...))")
    import torch.nn.functional as F
    weight = model.get_input_embeddings().weight
    k = check_int("k", k, 1, int(weight.shape[0]))
    prompt = F.normalize(model.get_prompt_embedding_to_save(adapter).detach().float().cpu(), dim=-1)
    vocab = F.normalize(weight.detach().float().cpu(), dim=-1)
    top = (prompt @ vocab.T).topk(k, dim=-1)
    return [{"virtual token": i, "nearest tokens": " | ".join(repr(tokenizer.decode([int(t)])) for t in idx),
             "cosine": float(val[0])} for i, (val, idx) in enumerate(zip(top.values, top.indices))]


def check_setup(cfg, arch=None, *, model_must_resolve: bool = False):
    """Checks that need the model's shape (config validation can't know it). Raises ConfigError naming the
    field. `arch`: an ftlab.models.Arch, or a preset name, hub id, folder or config that resolve_arch reads; by
    default resolved from cfg.model, and skipped if that can't be read (load_model says why, with the whole
    story); with `model_must_resolve` (the panel), a model that cannot be found (not a preset, a folder or, offline,
    a cached hub id) raises ModelNotFoundError at once."""
    from ftlab.config import ConfigError, TrainConfig
    from ftlab.shapes import as_arch, check_shape
    if not isinstance(cfg, TrainConfig):
        raise ConfigError("cfg", cfg, "a TrainConfig (check_setup(cfg); TrainConfig(**params) makes one)")
    cfg.validate()
    if arch is None:
        from ftlab.models import resolve_arch
        try:
            arch = resolve_arch(cfg.model)
        except Exception:  # an unknown hub id offline: load_model will say so with the full story
            if model_must_resolve:  # a model that cannot be found is refused here; one that is found but whose
                from ftlab.models import resolve_source  # numbers ftlab cannot read (not Llama-style) is not
                resolve_source(cfg.model, weights=False, trust_remote_code=cfg.trust_remote_code)
            arch = None
    else:
        arch = as_arch(arch)
    if cfg.effective_bits in (8, 4):
        from ftlab.quant import bitsandbytes_available
        ok, why = bitsandbytes_available()
        if not ok:
            raise ConfigError("bits", cfg.effective_bits, f"16 or 32 on this machine: {why}")
    if arch is None:
        return
    check_shape(arch, METHODS[cfg.method].memory_name, cfg.lora_r, cfg.target_modules, cfg.adapter_size,
                cfg.top_k_layers)
    virtual = cfg.num_virtual_tokens if cfg.method in ("prompt_tuning", "p_tuning") else 0
    if cfg.seq_len + virtual > arch.max_positions:
        raise ConfigError("seq_len", cfg.seq_len, f"at most {arch.max_positions - virtual} for this model")
