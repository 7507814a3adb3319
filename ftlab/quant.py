"""Bit width → BitsAndBytesConfig. bitsandbytes is imported lazily: only a 4/8-bit run needs it.

Storage per weight: 16 bits = 2 bytes; 8-bit (LLM.int8) = 1 byte + an fp32 scale per row;
4-bit NF4 = 0.5 byte + one absmax constant per block of 64 weights (fp32: +0.5 bit/weight,
double quantisation stores those constants in 8 bits with a second-level fp32 constant per 256
blocks: +0.127 bit/weight).
"""
from __future__ import annotations


def bitsandbytes_available() -> tuple[bool, str]:
    """(usable, why not). bitsandbytes 0.50 serves CUDA and the CPU backend."""
    try:
        import bitsandbytes  # noqa: F401
    except Exception as e:  # ImportError, or a broken native library
        return False, f"bitsandbytes cannot be imported ({type(e).__name__}: {e}); pip install bitsandbytes==0.50.2"
    return True, ""


def quantization_config(bits: int, *, compute_dtype=None, quant_type: str = "nf4", double_quant: bool = True):
    """None for 32/16 bits; a BitsAndBytesConfig for 8 or 4. Raises ValueError naming `bits`."""
    if bits in (32, 16):
        return None
    if bits not in (8, 4):
        raise ValueError(f"bits={bits!r} is not allowed: one of [32, 16, 8, 4]")
    if quant_type not in ("nf4", "fp4"):
        raise ValueError(f"quant_type={quant_type!r} is not allowed: 'nf4' or 'fp4'")
    ok, why = bitsandbytes_available()
    if not ok:
        raise ValueError(f"bits={bits} needs bitsandbytes: {why}. Use bits=16 instead.")
    import torch
    from transformers import BitsAndBytesConfig

    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                              bnb_4bit_use_double_quant=double_quant,
                              bnb_4bit_compute_dtype=compute_dtype or torch.bfloat16)
