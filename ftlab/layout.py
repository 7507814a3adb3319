"""Where a run's processes are: how many GPUs on how many machines, and how the training state is spread over
them (ftlab.choices.STRATEGIES). One checked record that the calculator (ftlab.memory_sharding), the launch
files (ftlab.distributed) and the panel share. Torch-free.

    ddp           every GPU holds everything (weights, gradients, optimizer); gradients are averaged
    zero1         DeepSpeed ZeRO stage 1: the optimizer state is split over the GPUs
    zero2         ZeRO stage 2: the optimizer state and the gradients are split
    zero3         ZeRO stage 3: the weights are split too, and gathered one layer at a time when used
    fsdp          PyTorch FSDP2, full shard: as ZeRO-3
    fsdp_grad_op  FSDP2 keeping the gathered weights from forward to backward: as ZeRO-2

Offloading moves state to the machine's CPU memory: the optimizer (ZeRO, any stage) or the weights as well
(ZeRO-3; FSDP offloads weights, gradients and optimizer together).
"""
from __future__ import annotations

from dataclasses import dataclass

from ftlab.choices import STRATEGIES
from ftlab.errors import ConfigError, check_bool, check_choice, check_int

ZERO = {"zero1": 1, "zero2": 2, "zero3": 3}
SHARDS_WEIGHTS = ("zero3", "fsdp")                 # the weights themselves are split over the GPUs
SHARDS_GRADIENTS = ("zero2", "zero3", "fsdp", "fsdp_grad_op")
FSDP = ("fsdp", "fsdp_grad_op")
MAX_GPUS, MAX_MACHINES = 64, 4096  # GPUs on one machine (8 or 16 in practice), machines in one run
LAYOUT_DEFAULTS = dict(num_gpus=1, strategy="ddp", offload_optimizer=False, offload_params=False, num_machines=1)


@dataclass(frozen=True)
class Layout:
    num_gpus: int = 1                # GPUs on each machine
    strategy: str = "ddp"
    offload_optimizer: bool = False
    offload_params: bool = False
    num_machines: int = 1

    @property
    def world(self) -> int:          # processes in all, one a GPU
        return self.num_gpus * self.num_machines

    @property
    def zero_stage(self) -> int | None:
        return ZERO.get(self.strategy)

    @property
    def shards_weights(self) -> bool:
        return self.strategy in SHARDS_WEIGHTS

    @property
    def offloads(self) -> bool:
        return self.offload_optimizer or self.offload_params

    def __str__(self):
        where = f"{self.num_gpus} GPU" + ("s" if self.num_gpus > 1 else "")
        where += f" × {self.num_machines} machines" if self.num_machines > 1 else ""
        off = [w for w, on in (("optimizer", self.offload_optimizer), ("weights", self.offload_params)) if on]
        if self.strategy in FSDP and self.offload_params:  # FSDP offloads them together
            off = ["weights, gradients and optimizer"]
        return f"{self.strategy} on {where}" + (f", {' and '.join(off)} on the CPU" if off else "")

    @classmethod
    def build(cls, num_gpus=1, strategy="ddp", offload_optimizer=False, offload_params=False, num_machines=1,
              bits: int | None = None, optimizer: str | None = None) -> "Layout":
        """The layout, checked: a wrong value raises ConfigError naming the field and what is allowed. `bits`
        (the base weights' storage) is checked against the strategy: an 8-bit base cannot be sharded; and
        `optimizer` against offloading: bitsandbytes' 8-bit optimizers step on the GPU only."""
        lay = cls(num_gpus=check_int("num_gpus", num_gpus, 1, MAX_GPUS),
                  strategy=check_choice("strategy", str(strategy) if isinstance(strategy, str) else strategy,
                                        STRATEGIES),
                  offload_optimizer=check_bool("offload_optimizer", offload_optimizer),
                  offload_params=check_bool("offload_params", offload_params),
                  num_machines=check_int("num_machines", num_machines, 1, MAX_MACHINES))
        s = lay.strategy
        if s == "ddp" and lay.offloads:
            name = "offload_optimizer" if lay.offload_optimizer else "offload_params"
            raise ConfigError(name, True, "False with strategy='ddp' (plain data parallel keeps everything on each "
                              "GPU): offloading needs strategy 'zero1'/'zero2'/'zero3' (optimizer) or 'zero3'/'fsdp' "
                              "(weights too)")
        if lay.offload_params and s in ("zero1", "zero2"):
            raise ConfigError("offload_params", True, f"False with strategy={s!r}: only ZeRO-3 ('zero3') and FSDP "
                              "('fsdp') split the weights, and only split weights can live on the CPU")
        if s in FSDP and lay.offload_optimizer and not lay.offload_params:
            raise ConfigError("offload_optimizer", True, f"offload_params=True with it under strategy={s!r}: FSDP "
                              "offloads the weights, gradients and optimizer together (or use strategy='zero3', "
                              "which can offload the optimizer alone)")
        if bits == 8 and (s in FSDP or s == "zero3"):
            raise ConfigError("strategy", s, "'ddp', 'zero1' or 'zero2' with an 8-bit base: bitsandbytes' int8 "
                              "weights cannot be split into shards (4-bit can, stored as bf16: QLoRA)")
        steps_on_cpu = lay.offload_optimizer or (s in FSDP and lay.offload_params)
        if steps_on_cpu and optimizer in ("adamw_8bit", "paged_adamw_8bit"):
            raise ConfigError("optimizer", optimizer, f"'adamw' or 'sgd' with the optimizer on the CPU ({lay}): "
                              "bitsandbytes' 8-bit optimizers step on a GPU only")
        return lay


__all__ = ["FSDP", "LAYOUT_DEFAULTS", "Layout", "SHARDS_GRADIENTS", "SHARDS_WEIGHTS", "STRATEGIES", "ZERO"]
