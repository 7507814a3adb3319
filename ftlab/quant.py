"""Bit width → BitsAndBytesConfig. bitsandbytes is imported lazily: only a 4/8-bit run needs it.

Storage per weight: 16 bits = 2 bytes; 8-bit (LLM.int8) = 1 byte + an fp32 scale per row;
4-bit NF4 = 0.5 byte + one absmax constant per block of 64 weights (fp32: +0.5 bit/weight,
double quantisation stores those constants in 8 bits with a second-level fp32 constant per 256
blocks: +0.127 bit/weight).
"""
from __future__ import annotations

import logging

from ftlab.choices import BITS, QUANT_TYPES
from ftlab.errors import ConfigError, check_bool, check_choice, check_int

# torch, transformers and bitsandbytes are imported inside the functions that need them: ftlab.models imports
# this module, and the memory calculator resolves presets through ftlab.models without torch


def bitsandbytes_available() -> tuple[bool, str]:
    """(usable, why not). bitsandbytes 0.50 serves CUDA and the CPU backend."""
    try:
        import bitsandbytes  # lazy: only a 4/8-bit run needs it; importing it is the test
    except Exception as e:  # ImportError, or a broken native library
        return False, f"bitsandbytes cannot be imported ({type(e).__name__}: {e}); pip install bitsandbytes==0.50.2"
    del bitsandbytes  # imported only to see that it can be
    return True, ""


class _Once(logging.Filter):
    """Lets each distinct message through once. bitsandbytes' int8 matmul logs the same cast warning at every call
    (5,880 identical lines in one run of lab 07): the first one says it, the rest add nothing."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def _once(logger_name: str) -> None:
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _Once) for f in logger.filters):
        logger.addFilter(_Once())


def quantization_config(bits: int, *, compute_dtype=None, quant_type: str = "nf4", double_quant: bool = True,
                        quant_storage=None):
    """None for 32/16 bits; a BitsAndBytesConfig for 8 or 4. Raises ConfigError naming `bits`, `quant_type`
    or `double_quant` (numpy integers are taken as int)."""
    bits = check_choice("bits", bits, BITS)
    quant_type = check_choice("quant_type", quant_type, QUANT_TYPES)
    double_quant = check_bool("double_quant", double_quant)
    if bits in (32, 16):
        return None
    ok, why = bitsandbytes_available()
    if not ok:
        err = ConfigError("bits", bits, f"16 or 32 on this machine: {why}")
        err.args = (f"bits={bits} needs bitsandbytes: {why}. Use bits=16 instead.",)
        raise err
    import torch  # lazy: the calculator loads this module (through ftlab.models) without torch
    from transformers import BitsAndBytesConfig  # lazy: as torch, and only a 4/8-bit load needs it

    if bits == 8:
        _once("bitsandbytes.autograd._functions")  # its "inputs will be cast" warning: once, not at every matmul
        return BitsAndBytesConfig(load_in_8bit=True)
    # quant_storage: the packed 4-bit weights' dtype (bnb's default uint8); FSDP and ZeRO-3 shard them only when it
    # is the model's own (bf16), as in FSDP + QLoRA
    storage = {"bnb_4bit_quant_storage": quant_storage} if quant_storage is not None else {}
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                              bnb_4bit_use_double_quant=double_quant,
                              bnb_4bit_compute_dtype=compute_dtype or torch.bfloat16, **storage)


def keep_4bit_trainable(model) -> int:
    """Keep bitsandbytes' CPU inference kernel away from a 4-bit model that is about to be trained.

    On a CPU with AVX512-BF16, bitsandbytes 0.50 repacks a Linear4bit's weight the first time the layer runs in
    eval mode on an input without grad (an evaluation, a generate()), and from then on computes that layer with
    its bf16 `gemv_4bit` kernel, in training mode too. That op has no backward: the gradient through every
    frozen 4-bit weight is silently dropped (torch only warns "gemv_4bit: an autograd kernel was not
    registered"), so each LoRA matrix gets only the part of its gradient that flows through the other
    adapters. Seen on SmolLM2-135M (one batch): cosine 0.04 to the true LoRA gradient, 0.07x its norm; lab 05's
    QLoRA val loss went 4.77 -> 4.69 in 12 steps where LoRA went 4.69 -> 3.14. This turns the repacking off
    for every Linear4bit of `model` and unpacks those already repacked (their block constants were rounded to
    bf16 on the way; the 4-bit codes are unchanged). Returns how many layers it unpacked; a no-op without
    bitsandbytes or on a model without 4-bit layers. load_model calls it for every 4-bit CPU load (the packed
    kernel also computes in bf16 whatever bnb_4bit_compute_dtype says, and was no faster on 2 cores: a
    24-token generate took 37 s packed, 23 s unpacked); apply_method calls it again for models loaded elsewhere."""
    try:
        # lazy: bitsandbytes is optional (a 16-bit set-up runs without it)
        import bitsandbytes as bnb
        from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse as unpack  # lazy: as above
    except Exception:  # no bitsandbytes, or one without the CPU repacking
        return 0
    unpacked = 0
    for module in model.modules():
        if not isinstance(module, bnb.nn.Linear4bit):
            continue
        module.support_avx512bf16_for_cpu = False  # what Linear4bit.forward checks before repacking
        weight = module.weight
        if getattr(getattr(weight, "quant_state", None), "packing_format_for_cpu", False):
            weight.data, weight.quant_state = unpack(weight.data, weight.quant_state)
            module.quant_state = weight.quant_state
            unpacked += 1
    return unpacked


# --- the arithmetic, for the quantisation lab ---------------------------------------------------------
# Written out because these few lines *are* the lesson; the lab checks them against bitsandbytes' own
# kernels (int8_vectorwise_quant, quantize_4bit), which is what training really uses.

BNB_BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)  # what bitsandbytes 0.50's quantize_4bit accepts


def _tensor(w, field: str = "w"):
    """A non-empty torch tensor of numbers (a list has no .float(); an empty one has no absmax)."""
    import torch  # lazy: the calculator loads this module (through ftlab.models) without torch
    if not isinstance(w, torch.Tensor) or w.numel() == 0 or w.is_complex() or w.dtype == torch.bool:
        raise ConfigError(field, w, "a non-empty torch tensor of real numbers, e.g. "
                          "model.model.layers[0].self_attn.q_proj.weight (torch.tensor(values) makes one)")
    return w


def _bits(bits) -> int:
    """2..8: q is stored as int8 (9 bits would wrap around), and 1 bit leaves L = 0 levels (absmax / 0)."""
    return check_int("bits", bits, 2, 8)


def _blocksize(blocksize, w, allowed: tuple | None = None):
    """A positive integer dividing w.numel() (each block one absmax), one of `allowed` if given."""
    n = w.numel()
    what = f"a positive integer dividing the tensor's {n} values" if allowed is None else \
        f"one of {list(allowed)} (bitsandbytes' 4-bit block sizes) dividing the tensor's {n} values"
    try:
        blocksize = check_int("blocksize", blocksize, 1)
    except ConfigError:
        raise ConfigError("blocksize", blocksize, what) from None
    if n % blocksize or (allowed is not None and blocksize not in allowed):
        raise ConfigError("blocksize", blocksize, what)
    return blocksize


def absmax_quantize(w, bits: int = 8, blocksize: int | None = None):
    """Symmetric absmax quantisation: q = round(w · L / absmax), L = 2^(bits-1) - 1 (127 for int8, 7 for int4),
    with one absmax per row (blocksize=None, LLM.int8's vector-wise scheme) or per block of `blocksize`
    consecutive values (QLoRA's scheme). Returns (q as int8, absmax per row/block). Rounding to the nearest
    of 2L+1 evenly spaced levels errs by at most absmax / (2L) per value.
    w: a torch tensor; bits: 2 to 8 (q is int8); blocksize: None, or a positive integer dividing w.numel()."""
    import torch  # lazy: the calculator loads this module (through ftlab.models) without torch
    w = _tensor(w)
    bits = _bits(bits)
    if blocksize is not None:
        blocksize = _blocksize(blocksize, w)
    levels = 2 ** (bits - 1) - 1
    x = w.float().reshape(-1, blocksize) if blocksize else w.float()
    absmax = x.abs().amax(dim=-1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)
    q = torch.round(x * levels / absmax).to(torch.int8)
    return q, absmax


def absmax_dequantize(q, absmax, bits: int = 8, shape=None):
    """w ≈ q · absmax / L, the inverse of absmax_quantize with the same bits (2 to 8)."""
    q, absmax = _tensor(q, "q"), _tensor(absmax, "absmax")
    bits = _bits(bits)
    levels = 2 ** (bits - 1) - 1
    w = q.float() * absmax / levels
    return w.reshape(shape) if shape is not None else w


def quantization_errors(w, blocksize: int = 64) -> dict:
    """Mean squared and largest error of int8 (per row), int4 (absmax per block) and bitsandbytes' nf4 and fp4
    (per block, the 4-bit codes QLoRA uses), on the same tensor. blocksize: one of bitsandbytes' 4-bit block
    sizes (32, 64, ..., 4096) that divides w.numel()."""
    w = _tensor(w)
    blocksize = _blocksize(blocksize, w, BNB_BLOCKSIZES)
    import bitsandbytes.functional as F  # lazy: bitsandbytes is optional (a 16-bit set-up runs without it)
    w = w.float()
    out = {}
    q, s = absmax_quantize(w, 8)
    out["int8 (absmax per row)"] = absmax_dequantize(q, s, 8) - w
    q, s = absmax_quantize(w, 4, blocksize)
    out[f"int4 (absmax per {blocksize})"] = absmax_dequantize(q, s, 4, w.shape) - w
    for kind in ("nf4", "fp4"):
        q4, state = F.quantize_4bit(w, blocksize=blocksize, quant_type=kind)
        out[f"{kind} (bitsandbytes, per {blocksize})"] = F.dequantize_4bit(q4, state).float() - w
    return {k: {"mse": float((e ** 2).mean()), "max_abs": float(e.abs().max())} for k, e in out.items()}


def nf4_levels() -> list[float]:
    """The 16 NF4 values (Dettmers et al., 2023, §3: quantiles of N(0, 1) scaled to [-1, 1], with an exact 0)
    as bitsandbytes uses them: the code table of a real 4-bit quantisation."""
    import torch  # lazy: the calculator loads this module (through ftlab.models) without torch
    import bitsandbytes.functional as F  # lazy: bitsandbytes is optional (a 16-bit set-up runs without it)
    _, state = F.quantize_4bit(torch.zeros(64), blocksize=64, quant_type="nf4")
    return [round(float(v), 4) for v in state.code]


def storage_bytes(model) -> int:
    """Bytes the model's weights occupy, quantisation constants included. transformers'
    get_memory_footprint() counts parameters and buffers only, so it misses 4-bit absmax values (and
    cannot show what double quantisation saves); this adds each 4-bit weight's quant_state (absmax, the
    code table, and the nested second-level state) and each 8-bit weight's row scales (SCB)."""
    import torch  # lazy: the calculator loads this module (through ftlab.models) without torch
    if not isinstance(model, torch.nn.Module):
        raise ConfigError("model", model, "a loaded model, a torch.nn.Module (ftlab.models.load_model returns it)")

    def nbytes(t):
        return t.numel() * t.element_size() if torch.is_tensor(t) else 0

    total = 0
    for p in model.parameters():
        total += nbytes(p.data)
        qs = getattr(p, "quant_state", None)
        if qs is not None:
            total += nbytes(qs.absmax) + nbytes(getattr(qs, "code", None))
            if getattr(qs, "nested", False):
                total += nbytes(qs.state2.absmax) + nbytes(qs.state2.code) + nbytes(getattr(qs, "offset", None))
        total += nbytes(getattr(p, "SCB", None))
    return total + sum(nbytes(b) for b in model.buffers())
