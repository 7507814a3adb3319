"""What each method does to an architecture, in numbers: the parameters it trains (as peft counts them), the
bytes a block saves for backward per token, and whether its sizes fit the model. Pure arithmetic on an
ftlab.models.Arch; the rows of ftlab.method_table point at these functions, and the calculator
(ftlab.memory), check_setup and apply_method ask the rows.

`s`, the sizes of a set-up: an object with lora_r, mods (the LoRA-style targets, resolved), num_virtual_tokens,
adapter_size and top_k_layers (ftlab.memory.Setup is one). `st`, the stream: an object with autocast,
act (bytes of the attention tensors) and wide (bytes of what a method's fp32 layers see); see Stream.
"""
from __future__ import annotations

from dataclasses import dataclass

from ftlab.choices import LINEAR_LAYERS, TARGET_SHORTCUTS
from ftlab.errors import ConfigError


@dataclass(frozen=True)
class Stream:
    """The dtypes a training step runs in. fp32_stream: the residual stream is fp32 (4/8-bit bases, whose
    prepare_model_for_kbit_training upcasts the rest; or bits=32); autocast: bf16 autocast (TRL, or bits=32)."""
    autocast: bool
    fp32_stream: bool

    @property
    def act(self) -> int:      # attention dtype (autocast casts sdpa's inputs)
        return 4 if self.fp32_stream and not self.autocast else 2

    @property
    def wide(self) -> int:     # bnb layers return the input's dtype: fp32 on an fp32 stream
        return 4 if self.fp32_stream else self.act

    @property
    def cast(self) -> int:     # peft's fp32 adapters: the copy of an adapted layer's input they save
        return 2 if self.autocast else 4


# --- checks of sizes against the model: fed by an Arch (the calculator, check_setup) or by a loaded model's own
# layers (ftlab.methods.apply_method, ftlab.adapters) ------------------------------------------------------------

def check_rank(lora_r: int, dims: dict) -> None:
    """LoRA's rank at most the smallest dimension of the targeted layers. dims: {name: (in, out)}."""
    smallest = min(min(d) for d in dims.values())
    if lora_r > smallest:
        raise ConfigError("lora_r", lora_r, f"at most {smallest}, the smallest dimension of the targeted layers "
                          "(a rank above it adds parameters but no expressiveness)")


def check_top_k(top_k_layers: int, blocks: int) -> None:
    if top_k_layers > blocks:
        raise ConfigError("top_k_layers", top_k_layers, f"an integer from 1 to {blocks} (the model's blocks)")


def check_adapter_size(adapter_size: int, hidden: int) -> None:
    if adapter_size > hidden:
        raise ConfigError("adapter_size", adapter_size, f"an integer from 1 to {hidden} (the hidden size)")


def check_bitfit(has_biases: bool, name: str) -> None:
    if not has_biases:
        raise ConfigError("method", name, "a method this model can train: it has no bias terms (Llama-style models "
                          "such as SmolLM2 have none), so BitFit would train nothing; method='ln_tuning' trains only "
                          "the norms (the nearest selective method), or use a model with biases (e.g. "
                          "qwen2.5-0.5b-instruct)")


def lora_targets(given, shapes: dict) -> list:
    """LoRA's target modules as a list: a TrainConfig shortcut ("q", "q,v", "q,k,v,o", "all-linear"), module
    names separated by commas, or a list of them; each must be one of the model's linear layers."""
    targets = given
    if isinstance(given, str):
        short = TARGET_SHORTCUTS.get(given)
        if short == "all-linear":
            return list(LINEAR_LAYERS)
        targets = list(short) if short else [t.strip() for t in given.split(",")]
    targets = list(targets)
    if not targets or not all(targets):
        raise ConfigError("lora_targets", given, f"one of {list(TARGET_SHORTCUTS)} or a non-empty list of module "
                          "names such as ['q_proj', 'v_proj']")
    missing = [t for t in targets if t not in shapes]
    if missing:
        raise ConfigError("lora_targets", given, f"one of {list(TARGET_SHORTCUTS)} or module names this model has "
                          f"(it has no module named {missing}): its linear layers are {list(shapes)}")
    return targets


def fit_low_rank(arch, s) -> list:
    """LoRA, DoRA, QLoRA, LoHa: the targets exist and the rank fits them; returns the targeted modules."""
    shapes = arch.linear_shapes()
    mods = lora_targets(s.lora_targets, shapes)
    check_rank(s.lora_r, {m: shapes[m] for m in mods})
    return mods


def fit_top_k(arch, s) -> list:
    check_top_k(s.top_k_layers, arch.layers)
    return []


def fit_adapter(arch, s) -> list:
    check_adapter_size(s.adapter_size, arch.hidden)
    return []


def fit_biases(name: str):
    def fit(arch, s) -> list:
        check_bitfit(arch.qkv_bias, name)
        return []
    return fit


# --- trainable parameters, as peft (or ftlab, for top_k and adapter) counts them ------------------------------

def block_params(arch) -> int:
    """One transformer block's parameters: the n_params formula without embeddings and final norm."""
    emb = arch.vocab * arch.hidden * (1 if arch.tied_embeddings else 2)
    return (arch.n_params - emb - arch.hidden) // arch.layers


def count_low_rank(arch, s) -> int:         # A (r × in) and B (out × r) on each target of each block
    shapes = arch.linear_shapes()
    return arch.layers * sum(s.lora_r * (shapes[m][0] + shapes[m][1]) for m in s.mods)


def count_dora(arch, s) -> int:             # LoRA and a magnitude per output feature
    shapes = arch.linear_shapes()
    return count_low_rank(arch, s) + arch.layers * sum(shapes[m][1] for m in s.mods)


def count_loha(arch, s) -> int:             # two low-rank pairs whose products are multiplied elementwise
    return 2 * count_low_rank(arch, s)


def count_ia3(arch, s) -> int:              # a scale per key, value and MLP hidden feature
    shapes = arch.linear_shapes()
    return arch.layers * (shapes["k_proj"][1] + shapes["v_proj"][1] + arch.intermediate)


def count_prompt(arch, s) -> int:           # virtual-token embeddings
    return s.num_virtual_tokens * arch.hidden


def count_prefix(arch, s) -> int:           # a key and a value per virtual token per layer (GQA: kv_heads wide)
    return s.num_virtual_tokens * arch.layers * 2 * arch.kv_heads * arch.hd


def count_p_tuning(arch, s) -> int:         # embeddings + peft's MLP prompt encoder (3 hidden×hidden layers)
    return s.num_virtual_tokens * arch.hidden + 3 * arch.hidden * arch.hidden + 3 * arch.hidden


def count_biases(arch, s) -> int:           # the q, k, v biases (Qwen2-style)
    return arch.layers * (arch.heads + 2 * arch.kv_heads) * arch.hd


def count_norms(arch, s) -> int:            # two RMSNorm scales a block and the final norm
    return (2 * arch.layers + 1) * arch.hidden


def count_top_k(arch, s) -> int:            # whole blocks
    return s.top_k_layers * block_params(arch)


def count_adapter(arch, s) -> int:          # two bottlenecks a block: down d→m and up m→d, with biases
    return arch.layers * 2 * (2 * arch.hidden * s.adapter_size + s.adapter_size + arch.hidden)


def count_all(arch, s) -> int:
    return arch.n_params


def count_none(arch, s) -> int:
    return 0


# --- bytes a block saves for backward, per token (no checkpointing; attention scores apart) -------------------
# Frozen linear layers save nothing (grad_x = grad_y·W needs no x); trainable ones save their input.

def frozen_block(arch, st: Stream, mlp: int) -> float:
    """What any block saves: two RMSNorm inputs in fp32, sdpa's q, k, v, output and log-sum-exp, the MLP's
    gate, up and silu(gate)."""
    i = arch.intermediate * arch.experts_per_token
    q, kv = arch.heads * arch.hd, arch.kv_heads * arch.hd
    return 2 * 4 * arch.hidden + st.act * (q + 2 * kv) + st.act * q + 4 * arch.heads + 3 * mlp * i


def saved_frozen(arch, s, st: Stream) -> float:          # prompt/prefix/p-tuning, ln_tuning (norm inputs: counted)
    return frozen_block(arch, st, st.wide)


def saved_full(arch, s, st: Stream) -> float:            # norms save their normalised input, linears their inputs
    h, i = arch.hidden, arch.intermediate * arch.experts_per_token
    if st.fp32_stream:   # mixed precision: fp32 norms; autocast makes a bf16 copy per linear call
        extra = 2 * 4 * h + 2 * (3 * h + 2 * h) + 2 * i
    else:
        extra = 2 * (2 * h + 2 * h) + 2 * i
    return frozen_block(arch, st, st.act) + extra


def _adapted_inputs(arch, s, st: Stream) -> float:
    """The input copies a block's adapted layers save (peft keeps adapters in fp32 and casts their input)."""
    shapes = arch.linear_shapes()
    if st.fp32_stream and not st.autocast:   # input already fp32: peft's cast is a no-op, shared inputs saved once
        groups = {"q_proj": "a", "k_proj": "a", "v_proj": "a", "gate_proj": "m", "up_proj": "m"}
        return 4 * sum({groups.get(m, m): shapes[m][0] for m in s.mods}.values())
    return st.cast * sum(shapes[m][0] for m in s.mods)


def saved_lora(arch, s, st: Stream) -> float:            # inputs, and A's output for B's gradient
    return frozen_block(arch, st, st.wide) + _adapted_inputs(arch, s, st) + st.cast * s.lora_r * len(s.mods)


def saved_dora(arch, s, st: Stream) -> float:            # and base and LoRA outputs, for the magnitude's gradient
    shapes = arch.linear_shapes()
    return saved_lora(arch, s, st) + (2 + st.cast) * sum(shapes[m][1] for m in s.mods)


def saved_loha(arch, s, st: Stream) -> float:            # the inputs of the layers whose weight delta is applied
    return frozen_block(arch, st, st.wide) + _adapted_inputs(arch, s, st)


def loha_weights(arch, s, st: Stream) -> float:
    """LoHa applies a full-size weight delta (out × in) per adapted layer: F.linear saves it for backward
    (peft's HadaWeight saves only the four factors and recomputes the products)."""
    shapes = arch.linear_shapes()
    return st.cast * sum(shapes[m][0] * shapes[m][1] for m in s.mods)


def saved_ia3(arch, s, st: Stream) -> float:             # fp32 scales promote: k and v outputs, fp32 MLP input
    kv = arch.kv_heads * arch.hd
    return frozen_block(arch, st, st.wide) + st.act * 2 * kv + 4 * arch.intermediate


def saved_biases(arch, s, st: Stream) -> float:          # q, k, v with their biases
    return frozen_block(arch, st, st.wide) + st.act * (arch.heads + 2 * arch.kv_heads) * arch.hd


def saved_adapter(arch, s, st: Stream) -> float:         # 2 adapters: input, bottleneck pre-activation and output
    return frozen_block(arch, st, st.wide) + 2 * st.cast * (arch.hidden + 2 * s.adapter_size)
