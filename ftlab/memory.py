"""How much GPU memory a fine-tuning set-up takes, part by part: pure arithmetic, no torch.

    weights + adapters + gradients + optimizer + activations + logits   = peak allocated (torch's counter)
    + allocator reserve (the caching allocator holds more than it hands out)
    + CUDA context (kernels and handles, outside torch's counters)      = device memory in use (nvidia-smi)

Each term follows what really runs (transformers 5, peft 0.21, bitsandbytes 0.50, sdpa attention):
* Frozen linear layers save nothing for backward (grad_x = grad_y·W needs no x); trainable ones
  save their input. So a frozen bf16 Llama block saves only: two RMSNorm inputs in fp32 (4h each),
  q, k, v and the attention output plus a log-sum-exp per head (sdpa: no seq² matrix), and the MLP's
  gate, up and silu(gate) (3 × i).
* peft keeps adapters in fp32 and casts each adapted layer's input to fp32: without autocast every
  adapted module saves its own 4-byte copy of its input; under autocast (TRL's bf16=True) a 2-byte one.
* prepare_model_for_kbit_training (4/8-bit bases) upcasts every non-quantised parameter to fp32, the
  embedding included, so the residual stream and what the block saves are fp32.
* The plain loop's loss upcasts the logits to fp32; backward through log_softmax holds three
  (batch·seq × vocab) fp32 tensors at once. TRL's fused LM head never holds them: it works on
  tiles of at most 4096 tokens × 32768 vocabulary entries.
* Gradient checkpointing keeps each block's input and recomputes one block at a time in backward.
* 4/8-bit bases: attention memory grows with seq² (as sdpa's math kernel), and 8-bit layers keep their
  inputs through checkpointing; both inferred from measurements (see the comments below).
Calibrated against GPU measurements (shared/calibration, ftlab/measured); the tests check both.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ftlab.gpus import GPUS, Fit
# the calculator's method names, its error wording and the trainable counts live with the shape checks; they are
# imported here too because callers ask ftlab.memory for them (ftlab.memory.trainable_parameters, METHODS)
from ftlab.shapes import (METHODS, _err, _err_if_not_strings, _refuse_non_decoder,  # noqa: F401
                          check_shape, trainable_parameters)


GIB = 2**30
OPTIMIZER_STATE_BYTES = {"adamw": None, "adamw_8bit": 2.0, "paged_adamw_8bit": 2.0, "sgd": 0.0}  # None: 2 × param
TRAINERS = ("trl", "plain")
@dataclass
class MemoryEstimate:
    total_gib: float                      # device memory in use at the peak (nvidia-smi), CUDA context included
    peak_allocated_gib: float             # torch.cuda.max_memory_allocated()
    components: dict                      # GiB by part
    fits: Fit | None = None
    trainable_params: int = 0
    details: dict = field(default_factory=dict)

    def __str__(self):
        parts = ", ".join(f"{k} {v:.2f}" for k, v in self.components.items() if v > 0.005)
        return f"{self.total_gib:.2f} GiB in use ({parts})" + (f"; {self.fits}" if self.fits else "")


def _weights_bytes(arch, bits: int, kbit_prepared: bool) -> float:
    """Base weights. 4-bit NF4 with double quantisation: 0.5 byte + 1/64 (8-bit absmax per 64 weights)
    + 4/(64·256) (fp32 constant per 256 blocks) a weight; 8-bit: 1 byte + an fp32 scale per row.
    Embeddings, LM head and norms stay unquantised: fp32 once prepare_model_for_kbit_training ran."""
    block = sum(i * o for i, o in arch.linear_shapes().values()) * arch.experts
    rest = arch.n_params - arch.layers * block
    if bits == 32:
        return 4.0 * arch.n_params
    if bits == 16:
        return 2.0 * arch.n_params
    rest_bytes = (4.0 if kbit_prepared else 2.0) * rest
    if bits == 8:
        rows = sum(o for _, o in arch.linear_shapes().values()) * arch.experts
        return arch.layers * (block + 4.0 * rows) + rest_bytes
    return arch.layers * block * (0.5 + 1 / 64 + 4 / (64 * 256)) + rest_bytes


def _saved_per_token_layer(arch, method, lora_r, mods, autocast: bool, fp32_stream: bool,
                           adapter_size: int = 64) -> float:
    """Bytes a block saves for backward, per token (no checkpointing; attention scores apart)."""
    shapes = arch.linear_shapes()
    h, i = arch.hidden, arch.intermediate * arch.experts_per_token
    q, kv = arch.heads * arch.hd, arch.kv_heads * arch.hd
    act = 4 if fp32_stream and not autocast else 2          # attention dtype (autocast casts sdpa's inputs)
    mlp = 4 if fp32_stream and method != "full" else act     # bnb layers return the input's dtype: fp32
    saved = 2 * 4 * h                                         # two RMSNorm inputs, upcast to fp32
    saved += act * (q + 2 * kv) + act * q + 4 * arch.heads   # sdpa: q, k, v, output, log-sum-exp
    saved += 3 * mlp * i                                      # silu(gate) saves gate; gate·up saves both
    if method == "full":  # trainable weights: norms save their normalised input, linears their inputs
        if fp32_stream:   # mixed precision: fp32 norms; autocast makes a bf16 copy per linear call
            saved += 2 * 4 * h + 2 * (3 * h + 2 * h) + 2 * i
        else:
            saved += 2 * (2 * h + 2 * h) + 2 * i
    elif method in ("lora", "qlora", "dora"):
        if fp32_stream and not autocast:                      # input already fp32: peft's cast is a no-op
            groups = {"q_proj": "a", "k_proj": "a", "v_proj": "a", "gate_proj": "m", "up_proj": "m"}
            shared = {groups.get(m, m): shapes[m][0] for m in mods}
            saved += 4 * sum(shared.values())
        else:                                                 # each adapted module saves its own cast copy
            saved += (2 if autocast else 4) * sum(shapes[m][0] for m in mods)
        saved += (2 if autocast else 4) * lora_r * len(mods)  # A's output, for B's gradient
        if method == "dora":                                  # base and LoRA outputs, for the magnitude's gradient
            saved += (2 + (2 if autocast else 4)) * sum(shapes[m][1] for m in mods)
    elif method == "ia3":  # fp32 scales promote: k and v outputs (saved in the stream dtype), fp32 MLP input
        saved += act * 2 * kv + 4 * i
    elif method == "bitfit":
        saved += act * (q + 2 * kv)
    elif method == "adapter":  # each of the 2 adapters saves its input, the bottleneck pre-activation and output
        saved += 2 * (2 if autocast else 4) * (h + 2 * adapter_size)
    # ln_tuning: the norms' inputs are saved already (counted above). (adapter, ln_tuning and top_k are
    # derived from the same accounting as the measured methods, not yet measured on a GPU themselves.)
    return saved


def estimate_memory(model, method: str = "lora", bits: int | None = None, lora_r: int = 16, lora_targets="all-linear",
                    num_virtual_tokens: int = 20, batch_size: int = 4, seq_len: int = 512,
                    gradient_checkpointing: bool = False, optimizer: str = "adamw", gpu: str | None = None,
                    trainer: str = "trl", adapter_size: int = 64, top_k_layers: int = 2,
                    **unknown) -> MemoryEstimate:
    """Estimate device memory of one set-up (see module doc). `model`: preset, hub id, folder or config.
    `bits`: the base weights' storage; by default 4 for method="qlora" (which needs 4), else 16."""
    from ftlab.models import resolve_arch

    from ftlab.errors import check_bool, check_choice, check_int, check_text
    _check_keywords(unknown)  # a misspelt argument (lora_rank=8) is named, with the nearest, never dropped
    method = check_choice("method", method, METHODS)
    if bits is None:
        bits = 4 if method == "qlora" else 16
    bits = check_choice("bits", bits, (32, 16, 8, 4))
    if method == "qlora" and bits != 4:
        raise _err("bits", bits, "4 with method='qlora' (QLoRA is LoRA on a 4-bit base; LoRA on an 8-bit base is "
                   "method='lora', bits=8)")
    lora_r = check_int("lora_r", lora_r, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    seq_len = check_int("seq_len", seq_len, 1)
    num_virtual_tokens = check_int("num_virtual_tokens", num_virtual_tokens, 1)
    adapter_size = check_int("adapter_size", adapter_size, 1)
    top_k_layers = check_int("top_k_layers", top_k_layers, 1)
    gradient_checkpointing = check_bool("gradient_checkpointing", gradient_checkpointing)
    optimizer = check_choice("optimizer", optimizer, OPTIMIZER_STATE_BYTES)
    trainer = check_choice("trainer", trainer, TRAINERS)
    if gpu is not None:
        gpu = check_choice("gpu", gpu, GPUS)
    if not isinstance(lora_targets, str):
        lora_targets = _err_if_not_strings(lora_targets)
    if isinstance(model, str):
        check_text("model", model)
    elif model is None or isinstance(model, (int, float, bool, list, tuple)):
        raise _err("model", model, "a preset name, hub id, local folder or a transformers config")
    if bits in (8, 4) and method in ("full", "bitfit", "top_k"):
        raise _err("bits", bits, f"16 or 32 with method={method!r}: quantised weights cannot be trained directly")
    _refuse_non_decoder(model)
    arch = resolve_arch(model)
    virtual = num_virtual_tokens if method in ("prompt_tuning", "p_tuning") else 0
    if seq_len + virtual > arch.max_positions:
        raise _err("seq_len", seq_len, f"at most {arch.max_positions - virtual} for this model "
                   f"(max_position_embeddings={arch.max_positions})")
    mods = check_shape(arch, method, lora_r, lora_targets, adapter_size, top_k_layers)

    train = method != "inference"
    kbit = bits in (8, 4) and train                  # prepare_model_for_kbit_training ran
    autocast = trainer == "trl" or bits == 32         # TRL trains under bf16 autocast; bits=32 means mixed precision
    T = batch_size * (seq_len + virtual)              # tokens in one step
    n_train = trainable_parameters(arch, method, lora_r, mods or lora_targets, num_virtual_tokens, adapter_size,
                                   top_k_layers) if train else 0
    adapters_separate = method not in ("full", "bitfit", "top_k", "inference")
    p_bytes = 4 if (adapters_separate or bits == 32) else 2   # peft adapters are fp32; full FT in the weights' dtype

    c = {"weights": _weights_bytes(arch, bits, kbit), "adapters": p_bytes * n_train if adapters_separate else 0.0}
    c["gradients"] = p_bytes * n_train if train else 0.0
    state = OPTIMIZER_STATE_BYTES[optimizer]
    state = 2 * p_bytes if state is None else state   # AdamW: two moments in the parameters' dtype
    c["optimizer"] = state * n_train if train else 0.0
    paged = c["optimizer"] if optimizer == "paged_adamw_8bit" else 0.0  # managed memory, outside torch's counters

    fp32_stream = kbit or bits == 32
    static = c["weights"] + c["adapters"] + c["optimizer"]
    if bits == 32 and train:  # autocast caches a bf16 copy of every fp32 weight it casts, until the step ends
        static += 2.0 * arch.n_params if method == "full" else 2.0 * n_train
    phases = {}
    if not train:  # no-grad forward: one block's temporaries, the KV cache, and the bf16 logits
        q, kv = arch.heads * arch.hd, arch.kv_heads * arch.hd
        act = T * (2 * (3 * arch.intermediate + q + 2 * kv + 2 * arch.hidden) + arch.layers * 2 * 2 * kv)
        # Observed on an H100 (4 models), not explained: the first forward also holds one temporary of
        # the embedding matrix's size in bf16; the bf16 logits come after it is freed.
        phases["forward"] = {"activations": act, "logits": max(2.0 * T * arch.vocab, 2.0 * arch.vocab * arch.hidden)}
    else:
        # top_k: the frozen blocks below carry no gradient, so they save nothing; the top k save as in full FT
        per_layer = T * _saved_per_token_layer(arch, "full" if method == "top_k" else method, lora_r, mods,
                                               autocast, fp32_stream, adapter_size)
        layers = top_k_layers if method == "top_k" else arch.layers  # check_shape: top_k_layers ≤ arch.layers
        # With an fp32 stream and no autocast (4/8-bit bases) memory grows as heads × seq² per layer, as
        # sdpa's math kernel would make it: it saves the softmax (heads × seq² fp32 a sequence) and its
        # backward holds ~2.5 more such tensors for the layer at hand. (Inferred from 8 measured set-ups
        # up to 16k tokens, not from a kernel trace.)
        scores = 4.0 * batch_size * arch.heads * (seq_len + virtual) ** 2 if fp32_stream and not autocast else 0.0
        stream = 4 if fp32_stream else 2
        if trainer == "plain":  # fp32 logits, log_softmax output and its gradient, all (T × vocab)
            logits = 3 * 4.0 * T * arch.vocab
        else:  # TRL's fused head: a bf16 tile of ≤4096 tokens × 32768 vocabulary entries, fp32 grad of hidden
            logits = 2.0 * min(T, 4096) * min(arch.vocab, 32768) + 4.0 * T * arch.hidden
        # 8-bit bases keep ~90 KB a token a block alive through checkpointing (5 set-ups measured): the
        # size of each block's fp32 inputs (shared by q/k/v and by gate/up) plus, without autocast, a
        # 16-bit copy per module. That fits bitsandbytes' int8 matmul holding its input outside
        # save_for_backward, where checkpointing cannot drop it (inferred, not traced).
        q_ = arch.heads * arch.hd
        fp32_in = 4 * (2 * arch.hidden + q_ + arch.intermediate)
        half_in = 0 if autocast else 2 * (5 * arch.hidden + q_ + arch.intermediate)
        int8_kept = T * arch.layers * (fp32_in + half_in) if bits == 8 else 0.0
        if gradient_checkpointing:  # block inputs kept; one block recomputed at a time in backward
            kept = T * layers * stream * arch.hidden + int8_kept
            phases["loss"] = {"activations": kept, "logits": logits}
            phases["recompute"] = {"activations": kept + 1.5 * per_layer + 3.5 * scores}
        else:
            # without checkpointing, LoRA already saves those fp32 inputs (counted in per_layer)
            kept = layers * (per_layer + scores) + (int8_kept - T * arch.layers * fp32_in * (not autocast)
                                                         if bits == 8 else 0.0)
            phases["loss"] = {"activations": kept, "logits": logits}
            phases["last_layer"] = {"activations": kept + 2.5 * scores + 0.5 * per_layer}
        phases["step"] = {"gradients": c["gradients"]}  # grads live once backward has freed the activations
    peak_phase = max(phases, key=lambda k: sum(phases[k].values()))
    for k in ("gradients", "activations", "logits"):
        c[k] = phases[peak_phase].get(k, 0.0)
    c["autocast_cache"] = static - (c["weights"] + c["adapters"] + c["optimizer"])
    if optimizer == "paged_adamw_8bit":
        c["optimizer"] = 0.0
    allocated = sum(c.values())
    gpu_ = GPUS.get(gpu or "H100-80GB")
    # The caching allocator keeps freed blocks for reuse, so it holds more than the peak allocation:
    # - about 8 % in general (rounding, blocks split for smaller requests), or most of the largest
    #   single transient tensor when that is bigger (it is freed and re-requested every step);
    # - gradients of a full fine-tune are created while the activations are still alive, in blocks
    #   the activations' don't fit: the loss phase plus all gradients stay reserved;
    # - two families of huge transients of different sizes (the loss's logits, the math kernel's
    #   attention scores) don't reuse each other's blocks well: about 60 % of the smaller stays.
    largest = 4.0 * T * arch.vocab if train and trainer == "plain" else (
        2.0 * min(T, 4096) * min(arch.vocab, 32768) if train else 2.0 * T * arch.vocab)
    if train and scores:
        largest = max(largest, scores)
    reserve = max(0.08 * allocated, 0.85 * largest, 64 * 2**20) if train else 0.02 * allocated + 32 * 2**20
    if train and method in ("full", "bitfit", "top_k"):
        loss_phase = c["weights"] + sum(phases["loss"].values())
        reserve = max(reserve, loss_phase + c["gradients"] + phases["step"]["gradients"] - allocated)
    if train and scores:
        families = [phases["loss"]["logits"], 3.5 * scores]
        if min(families) > GIB:
            reserve = max(reserve, 0.6 * min(families))
    c["allocator"] = reserve
    c["paged_optimizer"] = paged
    # inference loads no backward or optimizer kernels: measured 0.68 against 0.75 GiB on an H100
    c["cuda_context"] = (gpu_.context_gib if train else gpu_.context_gib - 0.07) * GIB
    comps = {k: v / GIB for k, v in c.items()}
    total = sum(comps.values())
    fit = None
    if gpu is not None:
        fit = Fit(gpu, total <= gpu_.total_gib, gpu_.total_gib, gpu_.total_gib - total)
    return MemoryEstimate(total_gib=total, peak_allocated_gib=allocated / GIB, components=comps, fits=fit,
                          trainable_params=n_train, details={"tokens_per_step": T, "arch": arch})


def _check_keywords(kw: dict) -> None:
    """Every keyword is an estimate_memory argument; a misspelt one (lora_rank=8) is refused with the nearest."""
    if not kw:
        return
    import difflib
    import inspect
    names = [n for n, p in inspect.signature(estimate_memory).parameters.items()
             if n not in ("model", "gpu") and p.kind is not p.VAR_KEYWORD]
    for k in kw:
        if k not in names:
            near = difflib.get_close_matches(str(k), names, n=1, cutoff=0.6)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise _err(str(k), kw[k], f"{hint}it is not an estimate_memory argument; the arguments are {names}")


def _largest(key: str, gpu: str, hi, **kw) -> int:
    """Largest value of `key` (batch_size or seq_len) whose estimate fits `gpu`: a doubling search then
    bisection, since memory grows monotonically with both. 0 means that not even 1 fits. The set-up is
    checked first, so an unknown model, method, keyword or an impossible setting raises instead of reading
    as 0. `hi`: the largest value tried, or a function of the checked estimate at 1 that gives it."""
    from ftlab.errors import check_choice
    gpu = check_choice("gpu", gpu, GPUS)
    _check_keywords({k: v for k, v in kw.items() if k != "model"})
    if key in kw:
        raise _err(key, kw[key], f"left out: max_{key}() searches for it")
    first = estimate_memory(**{**kw, key: 1, "gpu": gpu})  # raises for a bad set-up
    if callable(hi):
        hi = hi(first)

    def fits(v):
        return bool(estimate_memory(**{**kw, key: v, "gpu": gpu}).fits)
    if not first.fits:
        return 0
    lo, top = 1, 2
    while top <= hi and fits(top):
        lo, top = top, top * 2
    top = min(top, hi + 1)
    while top - lo > 1:
        mid = (lo + top) // 2
        lo, top = (mid, top) if fits(mid) else (lo, mid)
    return lo


def max_batch_size(model, gpu: str, **kw) -> int:
    """The largest batch size whose estimate fits `gpu` with the other settings (estimate_memory's) as given."""
    return _largest("batch_size", gpu, 65536, model=model, **kw)


def max_seq_len(model, gpu: str, **kw) -> int:
    """The longest sequence whose estimate fits `gpu` (capped at the model's positions, less any virtual
    tokens), with the other settings (estimate_memory's) as given."""
    def positions(first):  # the settings are checked by now: num_virtual_tokens is an integer
        virtual = int(kw.get("num_virtual_tokens", 20)) if kw.get("method") in ("prompt_tuning", "p_tuning") else 0
        return first.details["arch"].max_positions - virtual
    return _largest("seq_len", gpu, positions, model=model, **kw)
