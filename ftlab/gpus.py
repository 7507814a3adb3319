"""The GPUs the calculator knows: usable memory and CUDA context, and whether a set-up fits one."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GPU:
    name: str
    total_gib: float       # torch.cuda.mem_get_info()[1]: what a process can see
    context_gib: float     # CUDA context + libraries' kernels, outside torch's allocator


# Context: 0.75 GiB measured on an H100 (PyTorch 2.11, CUDA 13); other cards are taken as the same
# (the context grows with the kernels loaded, not with the card's size). RTX-A6000 (48 GB): 47.54 GiB is the
# total capacity torch reports for it in out-of-memory messages of public benchmark logs (not measured here).
GPUS = {g.name: g for g in [
    GPU("T4", 14.58, 0.75), GPU("L4", 22.03, 0.75), GPU("A10G", 22.06, 0.75), GPU("RTX-3090", 23.69, 0.75),
    GPU("RTX-4090", 23.65, 0.75), GPU("A100-40GB", 39.39, 0.75), GPU("RTX-A6000", 47.54, 0.75), GPU("A100-80GB", 79.15, 0.75),
    GPU("H100-80GB", 79.18, 0.75), GPU("H200", 139.8, 0.75),
]}


@dataclass
class Fit:
    gpu: str
    fits: bool
    total_gib: float
    left_gib: float            # negative: how much is missing

    def __bool__(self):
        return self.fits

    def __str__(self):
        return (f"fits on {self.gpu}: {self.left_gib:.1f} GiB left of {self.total_gib:.1f}" if self.fits else
                f"does not fit on {self.gpu}: {-self.left_gib:.1f} GiB short of {self.total_gib:.1f}")
