"""Fine-tuning methods: a table, one row a method, and everything the rest of ftlab asks of a method is on its
row. Adding a method is one `register_method(Method(...))` call (as peft's `register_peft_method` adds a
tuner): the config, the calculator, the panel, check_setup, apply_method, saving and resuming read the row.

A row says where the method sits in the taxonomy (Lialin et al., 2023: additive / selective /
reparameterisation), what it trains (the base's own weights or separate parameters, and the parameter names
it trains), the TrainConfig fields that shape it (its knobs, each with a widget in the panel), how to put it
on a loaded model (ftlab.tuners) and, for the calculator, two functions of the architecture (ftlab.shapes):
how many parameters it trains and how many bytes a block saves for backward per token.
QLoRA is LoRA on a 4-bit base; LoRA on an 8-bit base is `lora` with bits=8.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ftlab import encoder_shapes as E
from ftlab import shapes as S
from ftlab import tuners as T
from ftlab.errors import ConfigError

FAMILIES = ("full", "additive", "selective", "reparameterisation")


@dataclass(frozen=True)
class Method:
    name: str
    family: str                            # one of FAMILIES
    summary: str
    count: Callable                        # (arch, sizes) -> parameters trained, as peft counts them
    saved: Callable                        # (arch, sizes, stream) -> bytes a block saves for backward, per token
    trains: str                            # a regex the names of the parameters it trains match (as peft names them)
    peft_config: Callable | None = None    # (cfg, model) -> peft config
    freeze: Callable | None = None         # (cfg, model) -> None: methods that set requires_grad themselves
    fits: Callable = T.fits_any            # (cfg, model) -> None: its sizes checked against a loaded model's layers
    fits_arch: Callable | None = None      # (arch, sizes) -> targeted modules: the same, against the numbers
    saved_per_block: Callable | None = None  # (arch, sizes, stream) -> bytes a block saves whatever the tokens
    needs_bits: int | None = None          # QLoRA: the base must be 4-bit
    lr: float = 5e-4                       # a typical starting learning rate (its paper / peft's examples)
    # before any step the model computes exactly what its base computes (LoRA's B and DoRA's update start at 0,
    # IA3's scales at 1; selective methods change nothing): a comparison scores such bases once
    starts_as_base: bool = False
    knobs: tuple[str, ...] = ()            # the TrainConfig fields that shape it (the panel shows only these)
    trains_base: bool = False              # trains the base's own weights: they cannot be quantised
    saves_whole_model: bool = False        # what it trained is the whole model (saved as a transformers folder)
    low_rank: bool = False                 # takes lora_r and lora_targets (its sizes are checked as LoRA's)
    virtual_tokens: bool = False           # puts num_virtual_tokens positions before the input
    top_layers: bool = False               # trains (and saves activations of) only the top_k_layers blocks
    # peft's name for the adapter (its PeftConfig.peft_type) and the flags that tell it from another method of
    # the same type (DoRA is LoRA with use_dora): how a saved adapter or a checkpoint tells who wrote it
    peft_type: str | None = None
    peft_flags: dict = field(default_factory=dict)
    refuses_checkpointing: str = ""        # why gradient checkpointing cannot run with it ("" = it can)
    aliases: tuple[str, ...] = ()          # other names measurement files use for it
    # on a BERT-style encoder with a classification head: (EncoderArch, EncoderSizes) -> EncoderShape, what it trains
    # and saves there (ftlab.encoder_shapes); None: the encoder calculator has no formula for it
    encoder: Callable | None = None


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add a row; its name must be new and its family one of FAMILIES."""
    if not isinstance(method, Method):
        raise ConfigError("method", method, "an ftlab.method_table.Method")
    if method.name in METHODS:
        raise ConfigError("method", method.name, f"a new name: {sorted(METHODS)} are taken")
    if method.family not in FAMILIES:
        raise ConfigError("family", method.family, f"one of {list(FAMILIES)}")
    METHODS[method.name] = method
    return method


_LOW_RANK = dict(low_rank=True, fits=T.fits_low_rank, fits_arch=S.fit_low_rank,
                 knobs=("lora_r", "lora_alpha", "lora_targets"), starts_as_base=True)
_VIRTUAL = dict(knobs=("num_virtual_tokens",), saved=S.saved_frozen, trains=r"prompt_encoder")

# the calculator's row for a forward pass without gradients: not a way to train, so not in METHODS
INFERENCE = Method("inference", "full", "no training: a forward pass without gradients", S.count_none,
                   S.saved_frozen, r"$^", aliases=("infer",))
FULL = register_method(Method("full", "full", "every weight is trained", S.count_all, S.saved_full, r".",
                              freeze=T.train_all, lr=5e-5, starts_as_base=True, trains_base=True,
                              saves_whole_model=True, encoder=E.enc_all))
LORA = register_method(Method("lora", "reparameterisation", "W + (alpha/r)·B·A with rank-r A, B on the chosen "
                              "linear layers", S.count_low_rank, S.saved_lora, r"lora_", peft_config=T.lora_config,
                              peft_type="LORA", encoder=E.enc_low_rank, **_LOW_RANK))
register_method(Method("dora", "reparameterisation", "LoRA on the direction, a learned magnitude per column",
                       S.count_dora, S.saved_dora, r"lora_", peft_config=T.dora_config, peft_type="LORA",
                       peft_flags={"use_dora": True}, aliases=("qdora",), **_LOW_RANK))
QLORA = register_method(Method("qlora", "reparameterisation", "LoRA on a 4-bit NF4 base, adapters in higher "
                               "precision", S.count_low_rank, S.saved_lora, r"lora_", peft_config=T.lora_config,
                               needs_bits=4, peft_type="LORA", **_LOW_RANK))
register_method(Method("ia3", "additive", "learned vectors rescale keys, values and MLP activations", S.count_ia3,
                       S.saved_ia3, r"ia3_", peft_config=T.ia3_config, lr=5e-3, starts_as_base=True, peft_type="IA3",
                       encoder=E.enc_ia3))
register_method(Method("prompt_tuning", "additive", "learned virtual-token embeddings before the input",
                       S.count_prompt, peft_config=T.prompt_tuning_config, lr=3e-2, peft_type="PROMPT_TUNING",
                       virtual_tokens=True, aliases=("prompt",), **_VIRTUAL))
register_method(Method("prefix_tuning", "additive", "learned keys and values prepended in every layer",
                       S.count_prefix, peft_config=T.prefix_tuning_config, lr=1e-2, peft_type="PREFIX_TUNING",
                       aliases=("prefix",), refuses_checkpointing=(
                           "peft hands the prefix keys and values to each block through the attention cache, which "
                           "transformers drops in a checkpointed block (and a recomputed block would append them "
                           "twice), so it fails at the first step; lower batch_size or seq_len instead"), **_VIRTUAL))
# p-tuning at 5e-3 diverged (val loss 4.88 -> 5.43 in 4 steps, SmolLM2, definitions, seed 0); 1e-3: 4.47
register_method(Method("p_tuning", "additive", "virtual tokens produced by a small prompt encoder (MLP)",
                       S.count_p_tuning, peft_config=T.p_tuning_config, lr=1e-3, peft_type="P_TUNING",
                       virtual_tokens=True, **_VIRTUAL))
register_method(Method("bitfit", "selective", "only the bias terms are trained", S.count_biases, S.saved_biases,
                       r"\.bias$", freeze=T.freeze_but_biases, fits=T.fits_biases, fits_arch=S.fit_biases("bitfit"),
                       lr=1e-3, starts_as_base=True, trains_base=True, encoder=E.enc_biases))
register_method(Method("ln_tuning", "selective", "only the layer norms' scales are trained", S.count_norms,
                       S.saved_frozen, r"ln_tuning_layers", peft_config=T.ln_tuning_config, lr=5e-3,
                       starts_as_base=True, peft_type="LN_TUNING"))
register_method(Method("top_k", "selective", "all but the last k transformer blocks frozen", S.count_top_k,
                       S.saved_full, r"layers\.\d+\.", freeze=T.freeze_but_top_k, fits=T.fits_top_k,
                       fits_arch=S.fit_top_k, lr=1e-4, starts_as_base=True, knobs=("top_k_layers",),
                       trains_base=True, top_layers=True, encoder=E.enc_top_k))
register_method(Method("adapter", "additive", "Houlsby bottleneck adapters after attention and MLP (down, GELU, "
                       "up, residual)", S.count_adapter, S.saved_adapter, r"\.adapter\.", freeze=T.add_bottlenecks,
                       fits=T.fits_adapter, fits_arch=S.fit_adapter, lr=1e-3, knobs=("adapter_size",)))
# LoHa's update starts at zero as LoRA's: one factor of each pair is initialised to 0 (peft's init_weights=True)
register_method(Method("loha", "reparameterisation", "two rank-r pairs multiplied elementwise: "
                       "(B1·A1) ⊙ (B2·A2), rank up to r² for twice LoRA's parameters", S.count_loha, S.saved_loha,
                       r"hada_", peft_config=T.loha_config, saved_per_block=S.loha_weights, lr=1e-3,
                       peft_type="LOHA", **_LOW_RANK))

# every method-specific field, in the table's order
METHOD_KNOBS: tuple[str, ...] = tuple(dict.fromkeys(k for m in METHODS.values() for k in m.knobs))
