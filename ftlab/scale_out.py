"""Which way of spreading a run over several GPUs is the cheapest that fits: `cheapest_fit` tries the strategies
from the least communication to the most (plain data parallel, then splitting the optimizer, the gradients,
the weights, then moving state to the CPU) and returns the first whose per-GPU estimate fits the GPU."""
from __future__ import annotations

from dataclasses import dataclass, field

from ftlab.config import TrainConfig
from ftlab.errors import ConfigError, check_choice, check_int, check_number
from ftlab.gpus import GPUS
from ftlab.memory import MemoryEstimate, estimate_memory
from ftlab.method_table import LORA

# (strategy, offload_optimizer, offload_params), cheapest first, for each engine
LADDERS = {
    "deepspeed": [("ddp", False, False), ("zero1", False, False), ("zero2", False, False), ("zero3", False, False),
                  ("zero3", True, False), ("zero3", True, True)],
    "fsdp": [("ddp", False, False), ("fsdp_grad_op", False, False), ("fsdp", False, False), ("fsdp", False, True)],
}
NAMES = {"ddp": "DDP", "zero1": "ZeRO-1", "zero2": "ZeRO-2", "zero3": "ZeRO-3", "fsdp": "FSDP (full shard)",
         "fsdp_grad_op": "FSDP (shard gradients and optimizer)"}


def describe(strategy: str, offload_optimizer: bool = False, offload_params: bool = False) -> str:
    """'ZeRO-3 with the optimizer on the CPU', and the like."""
    off = [w for w, on in (("optimizer", offload_optimizer), ("weights", offload_params)) if on]
    if strategy in ("fsdp", "fsdp_grad_op") and offload_params:
        off = ["weights, gradients and optimizer"]
    return NAMES[strategy] + (f" with the {' and '.join(off)} on the CPU" if off else "")


@dataclass
class Plan:
    found: bool                               # False: not even the last rung fits
    strategy: str | None
    offload_optimizer: bool
    offload_params: bool
    num_gpus: int
    num_machines: int
    gpu: str
    estimate: MemoryEstimate | None           # the fitting one's (per GPU), or the last tried when none fits
    tried: list = field(default_factory=list)  # (description, GiB a GPU or None, fits or the reason it cannot run)

    @property
    def cpu_gib(self) -> float:
        return self.estimate.cpu_gib if self.estimate else 0.0

    def __str__(self):
        where = f"{self.num_gpus} × {self.gpu}" + (f" on each of {self.num_machines} machines"
                                                    if self.num_machines > 1 else "")
        if not self.found:
            ran = [t for t in self.tried if t[1] is not None]
            if not ran:
                return f"nothing can run on {where}: {self.tried[-1][2]}"
            why = f" ({ran[-1][2]})" if isinstance(ran[-1][2], str) else ""
            return f"nothing fits {where}: the leanest, {ran[-1][0]}, needs {ran[-1][1]:.1f} GiB a GPU" + (
                f" and {self.cpu_gib:.0f} GiB of CPU memory a machine" if self.cpu_gib else "") + why
        cpu = f", and {self.cpu_gib:.0f} GiB of CPU memory a machine" if self.cpu_gib else ""
        return (f"{describe(self.strategy, self.offload_optimizer, self.offload_params)} fits {where}: "
                f"{self.estimate.total_gib:.1f} GiB a GPU{cpu}")


def cheapest_fit(model, method: str | None = None, gpu: str | None = None, num_gpus: int = 8, *,
                 num_machines: int = 1, engine: str = "deepspeed", cpu_gib: float | None = None, **settings) -> Plan:
    """The cheapest strategy whose per-GPU estimate fits `num_gpus` × `gpu` (on each of `num_machines`), trying
    `engine`'s ladder ("deepspeed": DDP, ZeRO-1, ZeRO-2, ZeRO-3, then optimizer and weights on the CPU; "fsdp":
    DDP, shard gradients and optimizer, full shard, then offload). `settings`: estimate_memory's other arguments
    (batch_size per GPU, seq_len, gradient_checkpointing, ...). A rung the set-up cannot run (an 8-bit base
    cannot be split) is listed in `tried` with the reason and skipped. `cpu_gib`: each machine's CPU memory, if
    offloading must fit in it too (by default only the GPUs are checked; the plan says what the CPU holds).
    `model` may be a TrainConfig: its fields are the set-up and its gpu the GPU (method, gpu and settings are then
    left out). Otherwise `method` defaults to "lora" and `gpu` must be given."""
    if isinstance(model, TrainConfig):
        given = {k: v for k, v in {"method": method, "gpu": gpu, **settings}.items() if v is not None}
        if given:
            name = next(iter(given))
            raise ConfigError(name, given[name], "left out with a TrainConfig: the config holds the set-up and the "
                              "GPU (cheapest_fit(cfg, num_gpus=...), or change the config's field)")
        gpu = model.gpu
    elif gpu is None:
        raise ConfigError("gpu", None, f"the GPU to fit, one of {list(GPUS)}")
    method = LORA.name if method is None and not isinstance(model, TrainConfig) else method
    gpu = check_choice("gpu", gpu, GPUS)
    num_gpus, num_machines = check_int("num_gpus", num_gpus, 1), check_int("num_machines", num_machines, 1)
    engine = check_choice("engine", engine, LADDERS)
    if cpu_gib is not None:
        cpu_gib = check_number("cpu_gib", cpu_gib, 0, lo_open=True)
    bad = [k for k in ("strategy", "offload_optimizer", "offload_params", "gpu") if k in settings]
    if bad:
        raise ConfigError(bad[0], settings[bad[0]], "left out: cheapest_fit tries the strategies itself")
    plan = Plan(False, None, False, False, num_gpus, num_machines, gpu, None)
    for strategy, opt, params in LADDERS[engine]:
        what = describe(strategy, opt, params)
        layout = dict(num_gpus=num_gpus, num_machines=num_machines, strategy=strategy, offload_optimizer=opt,
                      offload_params=params)
        try:
            est = (estimate_memory(model, **layout) if isinstance(model, TrainConfig) else
                   estimate_memory(model, method, gpu=gpu, **layout, **settings))
        except ConfigError as e:
            if e.field not in ("strategy", "offload_optimizer", "offload_params"):
                raise  # a wrong model, method or setting: the user's to fix, not a rung to skip
            plan.tried.append((what, None, str(e)))
            continue
        fits = bool(est.fits) and (cpu_gib is None or est.cpu_gib <= cpu_gib)
        plan.tried.append((what, est.total_gib, fits if fits or not est.fits else
                           f"needs {est.cpu_gib:.0f} GiB of CPU memory a machine, more than cpu_gib={cpu_gib:g}"))
        plan.estimate = est
        if fits:
            plan.found, plan.strategy, plan.offload_optimizer, plan.offload_params = True, strategy, opt, params
            return plan
    return plan


__all__ = ["LADDERS", "Plan", "cheapest_fit", "describe"]
