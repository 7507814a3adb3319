"""The calculator's calibration constants: one named table, each with where it was measured or how it was
inferred. Everything else in ftlab.memory follows from shapes and dtypes. The measurements: shared/calibration
(an H100, PyTorch 2.11, CUDA 13) and ftlab/measured (ftlab's own sweep on the same card); tests/test_memory.py
checks the estimates against both.
"""
from __future__ import annotations

from dataclasses import dataclass

MIB = 2**20


@dataclass(frozen=True)
class Calibration:
    # TRL's fused LM head (its chunked cross-entropy) works on tiles of at most this many tokens × vocabulary
    # entries, so its bf16 logits never exceed one tile (read from TRL 1.16's source, matched by the TRL rows)
    trl_tile_tokens: int = 4096
    trl_tile_vocab: int = 32768
    # Gradient checkpointing: the recomputed block holds ~1.5 of its saved activations at once (its forward
    # again and the gradients flowing through it) and, with the math kernel, ~3.5 score tensors (the saved
    # softmax and ~2.5 more in its backward). Chosen with the first calculator against the 26 shared and 34 own
    # H100 rows (commit 96fd054), not traced kernel by kernel
    recompute_layer: float = 1.5
    recompute_scores: float = 3.5
    # Without checkpointing, backward through the last block holds ~0.5 of a block's activations and ~2.5 score
    # tensors more than the loss phase (the scores: inferred from 8 measured 4/8-bit set-ups up to 16k tokens;
    # the 0.5: chosen with the first calculator against the same rows; neither traced)
    last_layer_layer: float = 0.5
    last_layer_scores: float = 2.5
    # The caching allocator keeps freed blocks for reuse, so it holds more than the peak allocation:
    # about 8 % in general (rounding, blocks split for smaller requests), or most of the largest single
    # transient tensor when that is bigger (freed and re-requested every step), and never under 64 MiB
    reserve: float = 0.08
    reserve_largest: float = 0.85
    reserve_min: float = 64 * MIB
    # Two families of huge transients of different sizes (the loss's logits, the math kernel's attention
    # scores) don't reuse each other's blocks well: about 60 % of the smaller stays reserved (above 1 GiB each;
    # chosen against the long-sequence 4/8-bit rows)
    families_kept: float = 0.6
    # Inference: a no-grad forward frees little; 2 % and 32 MiB (chosen against the H100 inference rows)
    inference_reserve: float = 0.02
    inference_reserve_min: float = 32 * MIB
    # Inference loads no backward or optimizer kernels: its CUDA context measured 0.68 against 0.75 GiB (H100)
    inference_context_less_gib: float = 0.07
    # 8-bit bases keep ~90 KB a token a block alive through checkpointing (5 set-ups measured): the size of each
    # block's fp32 inputs (shared by q/k/v and by gate/up) plus, without autocast, a 16-bit copy per module. That
    # fits bitsandbytes' int8 matmul holding its input outside save_for_backward, where checkpointing cannot drop
    # it (inferred, not traced). ftlab.memory._int8_kept computes it from the shapes; no constant is fitted.


CALIBRATION = Calibration()
