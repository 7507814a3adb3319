"""Training on several processes: the trainer arguments of a Layout's strategy (trainer_overrides), the trained
weights gathered whole and saved by the first process only (save_on_main, what finetune calls), a launch from a
notebook cell (launch_in_notebook) and the launch files for a cluster (write_launch, ftlab.launch_files').

The same train script runs under `torchrun` and `accelerate launch`: the strategy travels in the trainer's
arguments (a DeepSpeed config dict, or fsdp/fsdp_config), not in the launcher's config.
"""
from __future__ import annotations

import os
import sys
import threading

import torch
import torch.distributed as dist

from ftlab.config import TrainConfig
from ftlab.errors import ConfigError, FtlabError, check_int, check_listeners
from ftlab.launch_files import CPU_ENV, deepspeed_config, write_launch
from ftlab.launch_run import free_port, run_launch
from ftlab.layout import FSDP, Layout
from ftlab.method_table import METHODS
from ftlab.report import ReportCallback


def world_size() -> int:
    """Processes in this run: the initialised group's size, else what the launcher said (WORLD_SIZE), else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def trainer_overrides(layout: Layout, cfg: TrainConfig) -> dict:
    """SFTConfig / TrainingArguments keyword arguments (finetune's **sft_overrides) for the layout's strategy.

    ddp: no unused-parameter search (every LoRA weight gets a gradient). zero1/2/3: `deepspeed=` a config dict
    (ftlab.launch_files.deepspeed_config). fsdp / fsdp_grad_op: FSDP2 through accelerate's plugin, wrapped a
    transformer block at a time (the model's _no_split_modules), weights resharded after forward (fsdp) or kept
    to backward (fsdp_grad_op), offloaded with offload_params, and FSDP's own activation checkpointing in place
    of the trainer's (which would gather every block a second time in backward)."""
    if not isinstance(layout, Layout):
        raise ConfigError("layout", layout, "a ftlab.layout.Layout (Layout.build(num_gpus=..., strategy=...))")
    if not isinstance(cfg, TrainConfig):
        raise ConfigError("cfg", cfg, "a TrainConfig")
    Layout.build(**{k: getattr(layout, k) for k in ("num_gpus", "strategy", "offload_optimizer", "offload_params",
                                                     "num_machines")}, bits=cfg.effective_bits, optimizer=cfg.optimizer)
    if layout.zero_stage is not None:
        if torch.cuda.is_available():
            return {"deepspeed": deepspeed_config(layout)}
        deepspeed_cpu_state()  # a try on CPU processes
        return {"deepspeed": deepspeed_config(layout), "use_cpu": False,
                "accelerator_config": {"use_configured_state": True}}
    if layout.strategy in FSDP:
        fsdp_config = {"fsdp_version": 2, "reshard_after_forward": layout.strategy == "fsdp",
                       "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "cpu_offload": layout.offload_params,
                       "activation_checkpointing": cfg.gradient_checkpointing, "state_dict_type": "FULL_STATE_DICT"}
        return {"fsdp": True, "fsdp_config": fsdp_config, "activation_checkpointing": False}
    return {"ddp_find_unused_parameters": False}


def use_local_gpu() -> None:
    """Each process of a launch its own GPU (torchrun's LOCAL_RANK) before anything lands on "cuda": without it
    every process loads its copy of the model onto GPU 0 first (4-bit ones, placed with device_map, stay there)."""
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def deepspeed_cpu_state() -> None:
    """DeepSpeed on CPU processes (DS_ACCELERATOR=cpu, gloo), for a try or a test: accelerate will not set it up
    itself (its state picks no backend without a GPU, and cpu=True turns DeepSpeed off, which leaves plain DDP),
    so the shared state is made here as a DeepSpeed run over gloo, and the trainer told to use it
    (accelerator_config={"use_configured_state": True}, use_cpu=False)."""
    if os.environ.get("DS_ACCELERATOR") != "cpu":
        raise ConfigError("DS_ACCELERATOR", os.environ.get("DS_ACCELERATOR"), "'cpu' in the environment before "
                          "deepspeed is imported, for a ZeRO run without a GPU")
    # lazy: deepspeed is optional (the 'multi' extra); accelerate's state only matters to a run
    import deepspeed.comm
    from accelerate.state import PartialState  # lazy: as above
    from accelerate.utils import DistributedType  # lazy: as above
    if not deepspeed.comm.is_initialized():
        deepspeed.comm.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    state = PartialState()
    state.backend, state.distributed_type = "gloo", DistributedType.DEEPSPEED
    state.num_processes, state.process_index = dist.get_world_size(), dist.get_rank()
    state.local_process_index = int(os.environ.get("LOCAL_RANK", "0"))


def shards_weights(sft_overrides: dict) -> bool:
    """Whether trainer arguments (trainer_overrides') split the weights over the processes (ZeRO-3, FSDP): each
    process then holds only shards, which a copy of the weights (ftlab.guard.GoodWeights) cannot put back."""
    ds = sft_overrides.get("deepspeed")
    stage = (ds.get("zero_optimization") or {}).get("stage") if isinstance(ds, dict) else None
    return stage == 3 or bool(sft_overrides.get("fsdp"))


def _zero3_params(params: list) -> list:
    return [p for p in params if hasattr(p, "ds_id")]  # DeepSpeed ZeRO-3 marks the parameters it partitions


def gathered_trained_state(model, whole: bool = False) -> dict:
    """{name: whole tensor on the CPU} of what `model` trains (whole=True: every parameter), gathered from the
    shards under ZeRO-3 (DeepSpeed's GatheredParameters) and FSDP2 (DTensor.full_tensor). A collective call:
    every process of the group must make it."""
    return _gather([(n, p) for n, p in model.named_parameters() if p.requires_grad or whole])


def _gather(named: list) -> dict:
    out = {}
    zero3 = _zero3_params([p for _, p in named])
    if zero3:
        # lazy: deepspeed is optional (the 'multi' extra) and imports only under a ZeRO-3 run
        import deepspeed
        with deepspeed.zero.GatheredParameters(zero3, modifier_rank=None):
            return {n: p.detach().clone().cpu() for n, p in named}
    for n, p in named:
        t = p.detach()
        if hasattr(t, "full_tensor"):  # an FSDP2 shard (DTensor): all-gather the whole tensor
            t = t.full_tensor()
        out[n] = t.clone().cpu()
    return out


def save_on_main(model, folder, cfg) -> str:
    """save_trained for a run of one process or several: with several, the trained tensors are gathered whole
    by every process, the first one alone writes `folder`, and every process waits for it at one barrier."""
    # lazy: ftlab.trained imports peft, which imports bitsandbytes; a GPU launch from a notebook needs neither
    from ftlab.trained import save_trained
    if world_size() == 1 or not dist.is_initialized():
        return save_trained(model, folder, cfg)
    state = gathered_trained_state(model, whole=METHODS[cfg.method].saves_whole_model)
    out = str(folder)
    error = None
    if rank() == 0:
        try:
            out = save_trained(model, folder, cfg, state_dict=state)
        except Exception as e:  # the others must still leave the barrier; rank 0 raises after it
            error = e
    dist.barrier()
    if error is not None:
        raise error
    return out


def check_notebook_launch(num_processes) -> int:
    """What launch_in_notebook refuses before it forks: ConfigError naming the field, with the fix."""
    restart = "restart the kernel and run this cell first (before anything touches the GPU)"
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        raise ConfigError("cuda", "initialised", f"CUDA untouched in this kernel before a launch: forked processes "
                          f"cannot use a GPU the parent already set up; {restart}")
    if torch.cuda.is_available() and "bitsandbytes" in sys.modules:  # it sets up CUDA when imported on a GPU machine
        raise ConfigError("bitsandbytes", "imported", f"not imported before the launch (importing it sets up "
                          f"CUDA); {restart}, and import bitsandbytes inside the launched function")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    n = (gpus or 2) if num_processes is None else check_int("num_processes", num_processes, 1)
    if gpus and n > gpus:
        raise ConfigError("num_processes", n, f"at most {gpus}: this machine has {gpus} GPU"
                          f"{'s' if gpus > 1 else ''}, one process each")
    cpus = max(os.cpu_count() or 1, 2)
    if not gpus and n > cpus:
        raise ConfigError("num_processes", n, f"at most {cpus} on this machine without a GPU: one CPU process "
                          "a core (each trains a whole model copy)")
    # lazy: accelerate's state module pulls in torch.distributed helpers; only a launch asks it
    from accelerate.state import AcceleratorState, PartialState
    if gpus and (AcceleratorState._shared_state or PartialState._shared_state):  # accelerate's launcher refuses it
        raise ConfigError("Accelerator", "already created", f"no Accelerator (or trainer) made in this kernel "
                          f"before a launch: create them inside the launched function; {restart}")
    return n


class _Child:
    """What each launched process runs: rank 0 relays its ReportCallback events and the function's return value
    to the parent through `queue`; an exception goes back as well (re-raised in the parent)."""

    def __init__(self, fn, args, queue, cpu: bool, nprocs: int, port: int):
        self.fn, self.args, self.queue, self.cpu, self.nprocs, self.port = fn, args, queue, cpu, nprocs, port

    def __call__(self, index=None, *args):
        if self.cpu:  # torch.multiprocessing gives the index; the rest is what torchrun would set
            os.environ.update(RANK=str(index), LOCAL_RANK=str(index), WORLD_SIZE=str(self.nprocs),
                              LOCAL_WORLD_SIZE=str(self.nprocs), MASTER_ADDR="127.0.0.1",
                              MASTER_PORT=str(self.port), ACCELERATE_USE_CPU="1", DS_ACCELERATOR="cpu")
            os.environ[CPU_ENV] = "1"
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.nprocs))
            # a trainer run earlier in this kernel left accelerate's one-process state behind; the fork copied it
            from accelerate.state import AcceleratorState  # lazy: as in check_notebook_launch
            AcceleratorState._reset_state(reset_partial_state=True)
        me = int(os.environ.get("RANK", "0"))
        if me == 0:
            _relay_events(self.queue)
        try:
            value = self.fn(*self.args)
        except BaseException as e:
            if me == 0:
                self.queue.put(("error", f"{type(e).__name__}: {e}"))
            raise
        if me == 0:
            self.queue.put(("return", value))


def _relay_events(queue) -> None:
    """In the launched rank-0 process only (a fork: the parent's class is untouched): every ReportCallback
    event, whatever trainer made it, also goes to the parent's listeners."""
    emit = ReportCallback._emit

    def relayed(self, event):
        emit(self, event)
        queue.put(("event", event))
    ReportCallback._emit = relayed


def launch_in_notebook(fn, *args, num_processes: int | None = None, listeners: list | None = None):
    """Run `fn(*args)` in `num_processes` processes from a notebook cell (one a GPU; default: all GPUs, or 2 CPU
    processes without a GPU) and return what the first process (rank 0) returned. Rank 0's step events (the
    ReportCallback's: step, loss, memory) reach `listeners` here, in the notebook's process, as they are made,
    so live plots update as in a one-process run. `fn` must create its model, trainer and Accelerator itself."""
    if not callable(fn):
        raise ConfigError("fn", fn, "a function to run in every process (it builds its model and trains)")
    check_listeners(listeners)
    n = check_notebook_launch(num_processes)
    # lazy: torch.multiprocessing and accelerate's launcher load only for a launch
    import torch.multiprocessing as mp
    queue = mp.get_context("fork").SimpleQueue()
    box: dict = {}

    def drain():
        while True:
            kind, value = queue.get()
            if kind == "stop":
                return
            if kind == "event":
                for listener in listeners or []:
                    listener(value)
            else:
                box[kind] = value

    thread = threading.Thread(target=drain, name="ftlab-launch-relay", daemon=True)
    thread.start()
    try:
        if torch.cuda.is_available():
            from accelerate import notebook_launcher  # lazy: only a GPU launch uses it
            notebook_launcher(_Child(fn, args, queue, False, n, 0), num_processes=n)
        else:
            # accelerate's notebook_launcher goes through torch's elastic agent and picks the device itself, and
            # its debug_launcher initialises the group from a file store without RANK in the environment (a
            # trainer's PartialState then sees a world of 1): fork the processes here with what torchrun sets
            mp.start_processes(_Child(fn, args, queue, True, n, free_port()), nprocs=n, start_method="fork")
    finally:
        queue.put(("stop", None))
        thread.join(timeout=30)
    if "error" in box:
        raise FtlabError(f"launch_in_notebook: the first process failed: {box['error']}")
    return box.get("return")


__all__ = ["check_notebook_launch", "gathered_trained_state", "launch_in_notebook", "rank", "save_on_main", "shards_weights",
           "run_launch", "trainer_overrides", "world_size", "write_launch"]
