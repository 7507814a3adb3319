"""Published memory rules of thumb, written out so a lab can set them beside ftlab's estimate.

Each returns decimal GB (10**9 bytes), as the sources quote them.
"""
from __future__ import annotations

GB = 1e9


def serving_formula(n_params: float, bits: int) -> float:
    """M = (P · 4 B) / (32 / Q) · 1.2: the weights at Q bits, plus 20 % 'overhead' (the serving formula of
    BITS Pilani's AIMLCZG521 lecture)."""
    return n_params * 4 / (32 / bits) * 1.2 / GB


def size_table(n_params: float) -> dict:
    """The 'model memory' table (accelerate's estimator, and the Llama-3-8B table of BITS Pilani's AIMLCZG521
    lecture): per dtype, the weights; inference ≈ 1.2 × weights; training with Adam ≈ 4 × weights (weights,
    gradients, two moments); LoRA ≈ weights
    + 20 % (the frozen base dominates)."""
    table = {}
    for dtype, nbytes in (("float32", 4), ("float16", 2), ("int8", 1), ("int4", 0.5)):
        size = n_params * nbytes / GB
        table[dtype] = {"total size": size, "inference": 1.2 * size, "training (Adam)": 4 * size,
                        "LoRA": 1.2 * size}
    return table


def mixed_precision_full_finetune(n_params: float) -> dict:
    """16-bit mixed-precision full fine-tuning, bytes per parameter: fp16/bf16 weights 2, fp32 master
    weights 4, gradients 2 (fp16) to 4 (fp32), Adam's two fp32 moments 8: 16 to 18 bytes, before
    activations. For 65B parameters: 1040 to 1170 GB; with activations CMU CS11-711 (Sean Welleck) quotes
    1000-1400 GB."""
    parts = {"weights (16-bit)": 2, "master weights (fp32)": 4, "gradients": 4, "Adam moments (fp32)": 8}
    return {k: v * n_params / GB for k, v in parts.items()}


# The Meta-Llama-3-8B-Instruct table of BITS Pilani's AIMLCZG521 lecture (Lecture 7), as printed there ("GB"):
# per dtype, total size, inference, training using Adam, LoRA fine-tuning
LECTURE_LLAMA3_8B = {"float32": (27.96, 33.55, 111.83, 34.99), "float16": (13.98, 16.77, 55.92, 18.22),
                     "int8": (6.99, 8.39, 27.96, 9.83), "int4": (3.49, 4.19, 13.98, 5.63)}
LECTURE_LORA_EXTRA_GIB = 1.44  # its LoRA row is its inference row plus this, in every column


def lecture_size_table(arch) -> dict:
    """The rule that gives that table's numbers, worked out from them: the parameters without the input
    embedding (arch.n_params less vocab × hidden: 7.50 B of Llama-3-8B's 8.03 B), times the dtype's bytes, in
    GiB (2**30 bytes, though labelled GB); inference 1.2 ×, training with Adam 4 ×, LoRA the inference figure plus
    a constant 1.44 GiB that the table does not explain. Returns {dtype: {column: GiB}}."""
    p = arch.n_params - arch.vocab * arch.hidden
    table = {}
    for dtype, nbytes in (("float32", 4), ("float16", 2), ("int8", 1), ("int4", 0.5)):
        size = p * nbytes / 2**30
        table[dtype] = {"total size": size, "inference": 1.2 * size, "training (Adam)": 4 * size,
                        "LoRA": 1.2 * size + LECTURE_LORA_EXTRA_GIB}
    return table
