"""The calculator's model states per GPU when a run is spread over several (ftlab.layout): what each GPU holds of
the weights, gradients and optimizer state under each strategy, what is gathered or bucketed in flight, and
what offloading puts in the machine's CPU memory. Activations are not split: they follow the per-GPU batch.

The arithmetic is the ZeRO paper's (Rajbhandari et al. 2019, "ZeRO: Memory Optimizations Toward Training
Trillion Parameter Models"): with Ψ trained parameters in mixed precision and K bytes of optimizer state a
parameter, a GPU holds (2+2+K)Ψ under plain data parallel, 4Ψ + KΨ/N under ZeRO-1, 2Ψ + (2+K)Ψ/N under
ZeRO-2 and (4+K)Ψ/N under ZeRO-3, N the GPUs in all. What each engine really keeps, read from its code:

* DeepSpeed (zero1/2/3) casts every floating parameter to bf16 and keeps, for each trained one, an fp32
  master copy (4 bytes) and the optimizer's state on it (AdamW: two fp32 moments, 8 bytes: K = 12), plus an
  fp32 gradient partition (4 bytes) that the paper's K leaves out. DeepSpeed's own estimators
  (estimate_zero2/zero3_model_states_mem_needs) count exactly these: 2Ψ + 18Ψ/N for ZeRO-2, 18Ψ/N plus
  4 bytes × the largest layer for ZeRO-3 (tests/test_sharding.py checks ours against theirs).
* FSDP2 under accelerate with bf16 mixed precision upcasts the trained parameters to fp32 (4 bytes, sharded)
  and gathers bf16 copies to compute; frozen weights stay as loaded. Gradients are fp32 and sharded.
* Only trained parameters have gradients and optimizer state: LoRA under ZeRO-1/2 keeps the frozen base
  whole on every GPU; under ZeRO-3 and FSDP the base is split too.
* Plain DDP (N > 1) adds one gradient-sized buffer: its buckets hold a copy of the gradients to average
  (gradient_as_bucket_view=False, the default of accelerate and transformers).
"""
from __future__ import annotations

from ftlab.layout import FSDP, Layout

OPTIMIZER_STATE_FP32 = {"adamw": 8.0, "adamw_8bit": 2.0, "paged_adamw_8bit": 2.0, "sgd": 0.0}  # bytes a parameter


def largest_layer(arch) -> int:
    """Parameters of the largest single module (what ZeRO-3 gathers whole at once): the embedding, mostly."""
    linear = max(i * o for i, o in arch.linear_shapes().values())
    return max(arch.vocab * arch.hidden, linear)


def per_gpu(s, c: dict, frozen16: float, loaded: float) -> tuple[dict, float]:
    """The model states of one GPU under `s.layout` from the one-GPU ones in `c` (weights, adapters, gradients,
    optimizer; ftlab's bytes), and the bytes offloaded to the CPU by each GPU's process. `frozen16`: the base
    weights as DeepSpeed keeps them (bf16, or 4-bit stored as bf16 for QLoRA); `loaded`: as loaded (FSDP
    keeps the frozen ones so: fp32 for a 32-bit base). `c` gains `gathered`
    (layers gathered whole in flight) and `buckets` (communication buffers)."""
    lay: Layout = s.layout
    if lay.strategy == "ddp":
        buckets = c["gradients"] if lay.world > 1 else 0.0
        return {**c, "gathered": 0.0, "buckets": buckets}, 0.0
    if lay.strategy in FSDP:
        return _fsdp(s, c, frozen16, loaded)
    return _zero(s, c, frozen16)


def _trained(s, c: dict, frozen: float, per: float = 2.0) -> tuple[float, float, float]:
    """(trained parameters, base weights without them, the separate adapters' count) as the engines see them;
    `frozen`: the base's bytes, `per` bytes a weight of it."""
    n = float(s.trainable_params)
    separate = s.train and not s.method.trains_base
    base = frozen if separate else max(frozen - per * n, 0.0)  # full, BitFit, top-k train part of the base
    return n, base, (n if separate else 0.0)


def _zero(s, c: dict, frozen16: float) -> tuple[dict, float]:
    """DeepSpeed ZeRO-1/2/3: bf16 working weights, fp32 master copy, fp32 gradient partition, optimizer state."""
    lay, a = s.layout, s.arch
    N = lay.world
    n, base, sep = _trained(s, c, frozen16)
    state = 4.0 * n + OPTIMIZER_STATE_FP32[s.optimizer] * n      # fp32 master + the optimizer's state on it
    work, adapters = base + 2.0 * (n - sep), 2.0 * sep           # every weight in bf16 (or 4-bit), trained ones too
    grads16, grads32 = 2.0 * n, 4.0 * n
    bucket = 2.0 * 2.0 * a.hidden ** 2  # HF's "auto" reduce bucket: hidden² bf16 elements, double-buffered
    stage, cpu = lay.zero_stage, 0.0
    if stage == 3:
        weights, adapters = work / N, adapters / N
        grads = grads32 / N
        # the largest layer's bf16 weights (and gradients, when it is trained) gathered whole: DeepSpeed's rule
        gathered = (4.0 if s.method.trains_base else 2.0) * largest_layer(a)
        bucket += 2.0 * 0.9 * a.hidden ** 2  # HF's "auto" prefetch bucket
        if lay.offload_params:
            cpu += weights + adapters
            weights = adapters = 0.0
    else:
        weights = work
        grads = grads16 + grads32 / N if stage == 1 else (grads16 + grads32) / N
        gathered = 0.0
    optimizer = state / N
    if lay.offload_optimizer:  # master, state and the fp32 gradient partition live on the CPU; the step runs there
        cpu += optimizer + grads32 / N
        optimizer = 0.0
        grads = grads16 if stage == 1 else 0.0
    out = {**c, "weights": weights, "adapters": adapters, "gradients": grads, "optimizer": optimizer,
           "gathered": gathered, "buckets": bucket}
    return out, cpu


def _fsdp(s, c: dict, frozen16: float, loaded: float) -> tuple[dict, float]:
    """FSDP2: trained parameters in fp32 and sharded, frozen ones as loaded and sharded; bf16 copies gathered."""
    lay, a = s.layout, s.arch
    N = lay.world
    n, base, sep = _trained(s, c, loaded, 4.0 if s.bits == 32 else 2.0)
    shards, adapters = (base + 4.0 * (n - sep)) / N, 4.0 * sep / N
    grads = 4.0 * n / N
    optimizer = OPTIMIZER_STATE_FP32[s.optimizer] * n / N
    whole = frozen16 + 2.0 * sep                                 # every weight as computed with (bf16; 4-bit stays)
    root = 2.0 * a.vocab * a.hidden * (1 if a.tied_embeddings else 2)  # embeddings and LM head, gathered at the root
    block, block_grads = (whole - root) / a.layers, 4.0 * n / a.layers
    if lay.strategy == "fsdp":  # the block in use and the next one (prefetched), its unsharded gradients, the root
        gathered = 2 * block + block_grads + root
    else:  # fsdp_grad_op: the gathered weights stay from forward to backward, as ZeRO-2's whole weights
        gathered = whole + block_grads
    cpu = 0.0
    if lay.offload_params:  # weights, gradients and optimizer on the CPU together
        cpu = shards + adapters + grads + optimizer
        shards = adapters = grads = optimizer = 0.0
    out = {**c, "weights": shards, "adapters": adapters, "gradients": grads, "optimizer": optimizer,
           "gathered": gathered, "buckets": 0.0}
    return out, cpu


__all__ = ["OPTIMIZER_STATE_FP32", "largest_layer", "per_gpu"]
