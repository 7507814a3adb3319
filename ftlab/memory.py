"""How much GPU memory a fine-tuning set-up takes, part by part: pure arithmetic, no weights.

    weights + adapters + gradients + optimizer + activations + logits   = peak allocated (torch's counter)
    + allocator reserve (the caching allocator holds more than it hands out)
    + CUDA context (kernels and handles, outside torch's counters)      = device memory in use (nvidia-smi)

Each term follows what really runs (transformers 5, peft 0.21, bitsandbytes 0.50, sdpa attention):
* Frozen linear layers save nothing for backward (grad_x = grad_y·W needs no x); trainable ones
  save their input. What each method adds is on its row (ftlab.method_table -> ftlab.shapes).
* peft keeps adapters in fp32 and casts each adapted layer's input to fp32: without autocast every
  adapted module saves its own 4-byte copy of its input; under autocast (TRL's bf16=True) a 2-byte one.
* prepare_model_for_kbit_training (4/8-bit bases) upcasts every non-quantised parameter to fp32, the
  embedding included, so the residual stream and what the block saves are fp32.
* The plain loop's loss upcasts the logits to fp32; backward through log_softmax holds three
  (batch·seq × vocab) fp32 tensors at once. TRL's fused LM head never holds them: it works on tiles.
* Gradient checkpointing keeps each block's input and recomputes one block at a time in backward.
* 4/8-bit bases: attention memory grows with seq² (as sdpa's math kernel), and 8-bit layers keep their
  inputs through checkpointing; both inferred from measurements (see CALIBRATION).
Calibrated against GPU measurements (shared/calibration, ftlab/measured); the tests check both.
The estimate runs in steps: the set-up (ftlab.memory_setup.Setup), the static bytes, the phases of a step
(the peak is the largest), the allocator's reserve and the CUDA context.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

from ftlab.config import TrainConfig
from ftlab.errors import ConfigError, check_choice
from ftlab.gpus import GPUS, Fit
from ftlab.layout import LAYOUT_DEFAULTS, Layout
from ftlab.memory_calibration import CALIBRATION as K
from ftlab.memory_cpu import estimate_cpu
from ftlab.memory_encoder import estimate_classification
from ftlab.memory_setup import DEFAULTS, Setup, as_arch, check_keywords, row, setup_arguments, setup_for
from ftlab.memory_sharding import per_gpu

GIB, TASKS = 2**30, ("causal_lm", "classification")  # task: a decoder's next token, or an encoder's class
OPTIMIZER_STATE_BYTES = {"adamw": None, "adamw_8bit": 2.0, "paged_adamw_8bit": 2.0, "sgd": 0.0}  # None: 2 × param


@dataclass
class MemoryEstimate:
    total_gib: float                      # device memory in use at the peak (nvidia-smi), CUDA context included
    peak_allocated_gib: float             # torch.cuda.max_memory_allocated()
    components: dict                      # GiB by part
    fits: Fit | None = None
    trainable_params: int = 0
    details: dict = field(default_factory=dict)
    cpu_gib: float = 0.0                  # what offloading puts in each machine's CPU memory (all its GPUs' share)

    def __str__(self):
        parts = ", ".join(f"{k} {v:.2f}" for k, v in self.components.items() if v > 0.005)
        layout = self.details.get("layout")
        where = f" per GPU, {layout}" if layout is not None and layout != Layout() else ""
        cpu = f"; {self.cpu_gib:.2f} GiB of CPU memory a machine" if self.cpu_gib else ""
        return f"{self.total_gib:.2f} GiB in use{where} ({parts}){cpu}" + (f"; {self.fits}" if self.fits else "")


def estimate_memory(model, method: str = "lora", bits: int | None = None, lora_r: int = 16, lora_targets="all-linear",
                    num_virtual_tokens: int = 20, batch_size: int = 4, seq_len: int = 512, task="causal_lm",
                    gradient_checkpointing: bool = False, optimizer: str = "adamw", gpu: str | None = None,
                    trainer: str = "trl", adapter_size: int = 64, top_k_layers: int = 2, num_gpus: int = 1,
                    strategy: str = "ddp", offload_optimizer: bool = False, offload_params: bool = False,
                    num_machines: int = 1, device: str = "cuda", num_labels=2, **unknown) -> MemoryEstimate:
    """Estimate device memory of one set-up (see module doc), per GPU. `model`: preset, hub id, folder or
    config, or a TrainConfig (its fields are the set-up and its gpu the target; then only `trainer` and the
    layout below may be given). `bits`: the base weights' storage; by default what the method needs (4 for
    qlora), else 16. Several GPUs (ftlab.layout, ftlab.memory_sharding): `num_gpus` on each of `num_machines`,
    `strategy` one of ddp, zero1, zero2, zero3, fsdp, fsdp_grad_op, and what ZeRO/FSDP offload to the CPU;
    `batch_size` is then per GPU and the result's `cpu_gib` what a machine's CPU memory holds. `device="cpu"`: the
    peak resident memory of a process that trains on the CPU instead (ftlab.memory_cpu), also beside a TrainConfig.
    `task="classification"`: a BERT-style encoder with a head of `num_labels` outputs (ftlab.memory_encoder)."""
    if check_choice("task", task, TASKS) == "classification":
        return estimate_classification(model, locals(), sys.modules[__name__])
    layout = dict(num_gpus=num_gpus, strategy=strategy, offload_optimizer=offload_optimizer,
                  offload_params=offload_params, num_machines=num_machines)
    if isinstance(model, TrainConfig):
        given = {k: v for k, v in locals().items()
                 if k in DEFAULTS and k not in ("trainer", "device", *LAYOUT_DEFAULTS) and v != DEFAULTS[k]}
        if given or unknown:
            name = next(iter({**given, **unknown}))
            raise ConfigError(name, {**given, **unknown}[name], "left out with a TrainConfig: the config holds the "
                              "set-up (estimate_memory(cfg), or change the config's field); only trainer, device and "
                              f"the GPUs' layout {list(LAYOUT_DEFAULTS)} may be given beside it")
        return estimate(setup_for(model, trainer=trainer, device=device, **layout))
    check_keywords(unknown)
    return estimate(Setup.build(model, method=method, bits=bits, lora_r=lora_r, lora_targets=lora_targets,
                                num_virtual_tokens=num_virtual_tokens, batch_size=batch_size, seq_len=seq_len,
                                gradient_checkpointing=gradient_checkpointing, optimizer=optimizer, gpu=gpu,
                                trainer=trainer, adapter_size=adapter_size, top_k_layers=top_k_layers, device=device,
                                **layout))


def estimate(s: Setup) -> MemoryEstimate:
    """The estimate of a checked set-up, step by step (on a CPU: ftlab.memory_cpu's)."""
    if s.device == "cpu":
        return estimate_cpu(s, sys.modules[__name__])
    c, static = _static(s)
    cache = static - (c["weights"] + c["adapters"] + c["optimizer"])
    c, offloaded = per_gpu(s, c, weights_bytes(s.arch, s.bits if s.bits in (8, 4) else 16, False),
                           weights_bytes(s.arch, s.bits, False))
    sharded = s.layout.strategy != "ddp"
    phases = _training_phases(s, c) if s.train else _inference_phases(s)
    if sharded:  # the engines keep their gradient partitions through the whole step
        cache = 0.0  # and hold the weights in bf16 already: autocast casts nothing
        for p in phases.values():
            p["gradients"] = c["gradients"]
    peak = max(phases, key=lambda k: sum(phases[k].values()))
    for k in ("gradients", "activations", "logits"):
        c[k] = phases[peak].get(k, 0.0)
    c["autocast_cache"] = cache
    paged = c["optimizer"] if s.optimizer == "paged_adamw_8bit" and not sharded else 0.0  # managed memory, outside torch's counters
    if paged:
        c["optimizer"] = 0.0
    allocated = sum(c.values())
    c["allocator"] = _reserve(s, c, phases, allocated)
    c["paged_optimizer"] = paged
    gpu = GPUS.get(s.gpu or "H100-80GB")
    c["cuda_context"] = (gpu.context_gib - (0 if s.train else K.inference_context_less_gib)) * GIB
    comps = {k: v / GIB for k, v in c.items()}
    total = sum(comps.values())
    fit = Fit(s.gpu, total <= gpu.total_gib, gpu.total_gib, gpu.total_gib - total) if s.gpu else None
    return MemoryEstimate(total_gib=total, peak_allocated_gib=allocated / GIB, components=comps, fits=fit,
                          trainable_params=s.trainable_params, cpu_gib=offloaded * s.layout.num_gpus / GIB,
                          details={"tokens_per_step": s.tokens, "arch": s.arch, "layout": s.layout})


def weights_bytes(arch, bits: int, kbit_prepared: bool) -> float:
    """Base weights. 4-bit NF4 with double quantisation: 0.5 byte + 1/64 (8-bit absmax per 64 weights)
    + 4/(64·256) (fp32 constant per 256 blocks) a weight; 8-bit: 1 byte + an fp32 scale per row.
    Embeddings, LM head and norms stay unquantised: fp32 once prepare_model_for_kbit_training ran."""
    mlp = ("gate_proj", "up_proj", "down_proj")  # a mixture of experts has `experts` MLPs, one attention
    block = sum(i * o * (arch.experts if n in mlp else 1) for n, (i, o) in arch.linear_shapes().items())
    rest = arch.n_params - arch.layers * block
    if bits in (32, 16):
        return bits / 8 * arch.n_params
    rest_bytes = (4.0 if kbit_prepared else 2.0) * rest
    if bits == 8:
        rows = sum(o * (arch.experts if n in mlp else 1) for n, (_, o) in arch.linear_shapes().items())
        return arch.layers * (block + 4.0 * rows) + rest_bytes
    return arch.layers * block * (0.5 + 1 / 64 + 4 / (64 * 256)) + rest_bytes


def _static(s: Setup) -> tuple[dict, float]:
    """Bytes that live through the whole step: weights, separate adapters, optimizer state (and the gradients'
    size, placed in a phase later); plus autocast's cache of bf16 weight copies."""
    n = s.trainable_params
    separate = s.train and not s.method.trains_base            # peft adapters are fp32; full FT in the weights' dtype
    p_bytes = 4 if (separate or s.bits == 32) else 2
    state = OPTIMIZER_STATE_BYTES[s.optimizer]
    state = 2 * p_bytes if state is None else state             # AdamW: two moments in the parameters' dtype
    c = {"weights": weights_bytes(s.arch, s.bits, s.kbit), "adapters": p_bytes * n if separate else 0.0,
         "gradients": p_bytes * n, "optimizer": state * n}
    static = c["weights"] + c["adapters"] + c["optimizer"]
    if s.bits == 32 and s.train:  # autocast caches a bf16 copy of every fp32 weight it casts, until the step ends
        static += 2.0 * (s.arch.n_params if s.method.saves_whole_model else n)
    return c, static


def _inference_phases(s: Setup) -> dict:
    """No-grad forward: one block's temporaries, the KV cache, and the bf16 logits."""
    a, T = s.arch, s.tokens
    q, kv = a.heads * a.hd, a.kv_heads * a.hd
    act = T * (2 * (3 * a.intermediate + q + 2 * kv + 2 * a.hidden) + a.layers * 2 * 2 * kv)
    # Observed on an H100 (4 models), not explained: the first forward also holds one temporary of the
    # embedding matrix's size in bf16; the bf16 logits come after it is freed.
    return {"forward": {"activations": act, "logits": max(2.0 * T * a.vocab, 2.0 * a.vocab * a.hidden)}}


def _scores(s: Setup) -> float:
    """With an fp32 stream and no autocast (4/8-bit bases) memory grows as heads × seq² per layer, as sdpa's math
    kernel would make it: it saves the softmax (heads × seq² fp32 a sequence)."""
    st = s.stream
    if not st.fp32_stream or st.autocast:
        return 0.0
    return 4.0 * s.batch_size * s.arch.heads * (s.seq_len + s.virtual) ** 2


def _logits(s: Setup) -> float:
    a, T = s.arch, s.tokens
    if s.trainer == "plain":  # fp32 logits, log_softmax output and its gradient, all (T × vocab)
        return 3 * 4.0 * T * a.vocab
    # TRL's fused head: a bf16 tile of tokens × vocabulary entries, and the fp32 gradient of the hidden states
    return 2.0 * min(T, K.trl_tile_tokens) * min(a.vocab, K.trl_tile_vocab) + 4.0 * T * a.hidden


def _int8_kept(s: Setup) -> tuple[float, float]:
    """(kept, fp32 inputs): what 8-bit bases keep alive through checkpointing (see CALIBRATION.int8_kept)."""
    a, T = s.arch, s.tokens
    q = a.heads * a.hd
    fp32_in = 4 * (2 * a.hidden + q + a.intermediate)
    half_in = 0 if s.stream.autocast else 2 * (5 * a.hidden + q + a.intermediate)
    return (T * a.layers * (fp32_in + half_in) if s.bits == 8 else 0.0), T * a.layers * fp32_in


def _training_phases(s: Setup, c: dict) -> dict:
    """The phases of a training step, each with what is alive then: the loss (activations saved, logits), the
    backward through the last (or a recomputed) block, and the optimizer step (gradients)."""
    st, a = s.stream, s.arch
    per_layer = s.tokens * s.method.saved(a, s, st)
    fixed = s.method.saved_per_block(a, s, st) if s.method.saved_per_block else 0.0
    layers = s.top_k_layers if s.method.top_layers else a.layers  # the frozen blocks below save nothing
    scores, logits = _scores(s), _logits(s)
    int8_kept, fp32_in = _int8_kept(s)
    if s.gradient_checkpointing:  # block inputs kept; one block recomputed at a time in backward
        kept = s.tokens * layers * (4 if st.fp32_stream else 2) * a.hidden + int8_kept
        phases = {"loss": {"activations": kept, "logits": logits},
                  "recompute": {"activations": kept + K.recompute_layer * (per_layer + fixed)
                                + K.recompute_scores * scores}}
    else:  # without checkpointing, LoRA already saves those fp32 inputs (counted in per_layer)
        kept = layers * (per_layer + fixed + scores) + (int8_kept - fp32_in * (not st.autocast) if s.bits == 8 else 0.0)
        phases = {"loss": {"activations": kept, "logits": logits},
                  "last_layer": {"activations": kept + K.last_layer_scores * scores + K.last_layer_layer * per_layer}}
    phases["step"] = {"gradients": c["gradients"]}  # grads live once backward has freed the activations
    return phases


def _reserve(s: Setup, c: dict, phases: dict, allocated: float) -> float:
    """What the caching allocator holds beyond the peak allocation (see CALIBRATION for each rule)."""
    if not s.train:
        return K.inference_reserve * allocated + K.inference_reserve_min
    a, T = s.arch, s.tokens
    tile = 2.0 * min(T, K.trl_tile_tokens) * min(a.vocab, K.trl_tile_vocab)
    largest = 4.0 * T * a.vocab if s.trainer == "plain" else tile
    scores = _scores(s)
    largest = max(largest, scores)
    reserve = max(K.reserve * allocated, K.reserve_largest * largest, K.reserve_min)
    if s.method.trains_base and s.layout.strategy == "ddp":  # gradients made while the loss phase is alive stay reserved
        loss_phase = c["weights"] + sum(phases["loss"].values())
        reserve = max(reserve, loss_phase + c["gradients"] + phases["step"]["gradients"] - allocated)
    if scores:
        families = [phases["loss"]["logits"], K.recompute_scores * scores]
        if min(families) > GIB:
            reserve = max(reserve, K.families_kept * min(families))
    return reserve


def count_trainable(arch, method="lora", lora_r: int = 16, lora_targets="all-linear",
                    num_virtual_tokens: int = 20, adapter_size: int = 64, top_k_layers: int = 2) -> int:
    """What the method trains on `arch` (an Arch, preset, hub id, folder or config), counted as peft (or ftlab,
    for top_k and adapter) counts it. `method` may be a TrainConfig (its fields give the rest: count_trainable(
    model.config, cfg)); `arch` may be a TrainConfig alone (its model too: count_trainable(cfg))."""
    if isinstance(arch, TrainConfig):
        arch, method = arch.model, arch
    if isinstance(method, TrainConfig):
        sizes = dict(lora_r=lora_r, lora_targets=lora_targets, num_virtual_tokens=num_virtual_tokens,
                     adapter_size=adapter_size, top_k_layers=top_k_layers)
        given = {k: v for k, v in sizes.items() if v != DEFAULTS[k]}
        if given:  # the config holds them: a second value would be dropped in silence
            name = next(iter(given))
            raise ConfigError(name, given[name], "left out with a TrainConfig: the config holds the set-up "
                              "(count_trainable(cfg), or change the config's field)")
        return Setup.build(as_arch(arch), **{**setup_arguments(method), "seq_len": 1}).trainable_params
    return Setup.build(as_arch(arch), method=method, lora_r=lora_r, lora_targets=lora_targets,
                       num_virtual_tokens=num_virtual_tokens, adapter_size=adapter_size, top_k_layers=top_k_layers,
                       seq_len=1).trainable_params


def _largest(key: str, gpu: str, hi, **kw) -> int:
    """Largest value of `key` (batch_size or seq_len) whose estimate fits `gpu`: a doubling search then
    bisection, since memory grows monotonically with both. 0 means that not even 1 fits. The set-up is
    checked first, so an unknown model, method, keyword or an impossible setting raises instead of reading
    as 0. `hi`: the largest value tried, or a function of the checked set-up at 1 that gives it."""
    gpu = check_choice("gpu", gpu, GPUS)
    model = kw.pop("model")
    check_keywords(kw)
    if key in kw:
        raise ConfigError(key, kw[key], f"left out: max_{key}() searches for it")
    first = Setup.build(model, **{**kw, key: 1, "gpu": gpu})  # raises for a bad set-up
    hi = hi(first) if callable(hi) else hi

    def fits(v):
        return bool(estimate(Setup.build(first.arch, **{**kw, key: v, "gpu": gpu})).fits)
    if not fits(1):
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
    return _largest("seq_len", gpu, lambda first: first.arch.max_positions - first.virtual, model=model, **kw)


__all__ = ["GPUS", "MemoryEstimate", "count_trainable", "estimate", "estimate_memory", "max_batch_size",
           "max_seq_len", "row", "weights_bytes"]
