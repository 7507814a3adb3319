"""The files a run on several GPUs (or machines) needs, written beside each other by `write_launch`: a
self-contained train.py, the run's config.json, accelerate_config.yaml, ds_config.json (ZeRO) and a README.md
with the exact commands (accelerate launch, torchrun, SLURM's launch.slurm, and a try on CPU processes).
Torch-free: the DeepSpeed config (deepspeed_config) is plain data, which ftlab.distributed hands to the trainer."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ftlab.config import TrainConfig
from ftlab.errors import ConfigError, check_int, check_text
from ftlab.layout import FSDP, Layout

# the variable the written train.py reads to run on CPU processes (gloo) instead of GPUs: a try before a GPU run
CPU_ENV = "FTLAB_CPU"
# how the written train.py's first process marks a training event and its summary in its output (run_launch)
EVENT, RESULT = "ftlab-event ", "ftlab-result "


ADDRESS = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$|^[0-9A-Fa-f:]+$")  # a host name, IPv4 or IPv6


def check_address(value) -> str:
    """The first machine's address as the other machines, torchrun and the YAML file read it: a host name, an
    IPv4 or an IPv6 address, nothing that a shell or YAML would read differently."""
    if not isinstance(value, str) or not ADDRESS.fullmatch(value):
        raise ConfigError("main_address", value, "the first machine's host name (node001, gpu-1.cluster) or IP "
                          "address (10.0.0.1, fd00::1): letters, digits, '.', '-' (':' in IPv6), no spaces")
    return value


def deepspeed_config(layout: Layout) -> dict:
    """The DeepSpeed config of a ZeRO layout, with "auto" wherever transformers' integration fills the value
    from the training arguments (batch sizes, accumulation, clipping, precision, bucket sizes). No optimizer or
    scheduler section: the trainer's own AdamW and schedule are used (zero_allow_untested_optimizer is set by
    transformers). ZeRO-3 gathers the 16-bit weights when a model is saved."""
    if layout.zero_stage is None:
        raise ConfigError("strategy", layout.strategy, "'zero1', 'zero2' or 'zero3' for a DeepSpeed config")
    zero = {"stage": layout.zero_stage, "overlap_comm": True, "contiguous_gradients": True,
            "reduce_bucket_size": "auto"}
    if layout.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    force = {"zero_force_ds_cpu_optimizer": False} if layout.offload_optimizer else {}
    if layout.zero_stage == 3:
        zero.update(stage3_prefetch_bucket_size="auto", stage3_param_persistence_threshold="auto",
                    stage3_gather_16bit_weights_on_model_save=True)
        if layout.offload_params:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    # with the optimizer offloaded DeepSpeed refuses the trainer's torch AdamW unless told it may run it on the CPU
    # (its own DeepSpeedCPUAdam is faster, but needs a compiled extension)
    return {**force, "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"}, "zero_optimization": zero,
            "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "steps_per_print": 10**9,
            "wall_clock_breakdown": False}


def accelerate_yaml(layout: Layout, main_address: str | None, main_port: int) -> str:
    """accelerate's config file for the layout (what `accelerate config` would write)."""
    lines = ["compute_environment: LOCAL_MACHINE", "debug: false"]
    if layout.zero_stage is not None:
        lines += ["distributed_type: DEEPSPEED", "deepspeed_config:",
                  "  deepspeed_config_file: ds_config.json", "  zero3_init_flag: " +
                  ("true" if layout.zero_stage == 3 else "false")]
        if layout.num_machines > 1:
            lines.append("  deepspeed_multinode_launcher: standard")
    elif layout.strategy in FSDP:
        lines += ["distributed_type: FSDP", "fsdp_config:", "  fsdp_version: 2",
                  f"  fsdp_reshard_after_forward: {'true' if layout.strategy == 'fsdp' else 'false'}",
                  "  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP",
                  f"  fsdp_offload_params: {'true' if layout.offload_params else 'false'}",
                  "  fsdp_state_dict_type: FULL_STATE_DICT", "  fsdp_cpu_ram_efficient_loading: true"]
    else:
        lines.append("distributed_type: MULTI_GPU")
    lines += [f"num_processes: {layout.world}", f"num_machines: {layout.num_machines}",
              "machine_rank: 0  # set to this machine's rank (0 .. num_machines-1) on each machine",
              f"main_process_ip: '{main_address or '127.0.0.1'}'", f"main_process_port: {main_port}",
              "mixed_precision: bf16  # the trainer's own choice (bf16 on GPUs that have it) decides in train.py",
              "rdzv_backend: static", "same_network: true", "use_cpu: false", ""]
    if layout.zero_stage is not None:  # accelerate takes the precision from ds_config.json ("auto")
        lines = [line for line in lines if not line.startswith("mixed_precision")]
    return "\n".join(lines)


TRAIN_PY = """\"\"\"Written by ftlab.distributed.write_launch: {layout}. Run it with the commands in README.md; the same
file runs under `accelerate launch` and `torchrun` (and on CPU processes with {cpu_env}=1).\"\"\"
import dataclasses
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
LAYOUT = {layout_args!r}
CPU = os.environ.get("{cpu_env}") == "1"
if CPU:  # a try on CPU processes over gloo; DeepSpeed's CPU accelerator is set before deepspeed is imported
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if not LAYOUT["strategy"].startswith("zero"):  # with it accelerate would quietly turn DeepSpeed off
        os.environ.setdefault("ACCELERATE_USE_CPU", "1")

import torch.distributed as dist  # noqa: E402

from ftlab.config import TrainConfig  # noqa: E402
from ftlab.data import sft_data  # noqa: E402
from ftlab.distributed import trainer_overrides, use_local_gpu  # noqa: E402
from ftlab.layout import Layout  # noqa: E402
from ftlab.models import load_for  # noqa: E402
from ftlab.train import finetune  # noqa: E402


def main():
    with open(os.path.join(HERE, "config.json")) as f:
        cfg = TrainConfig(**json.load(f))
    layout = Layout.build(**LAYOUT, bits=cfg.effective_bits, optimizer=cfg.optimizer)
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    want = world if CPU else layout.world  # on CPU processes what torchrun started; on GPUs the layout's
    if world != want:
        sys.exit(f"train.py: {{world}} processes were started, the layout ({{layout}}) needs {{want}}")
    use_local_gpu()  # each process its own GPU (if any) before the model loads onto "cuda"
    overrides = trainer_overrides(layout, cfg)
    # 4-bit weights packed as bf16 can be split like any other weight (FSDP + QLoRA); uint8 ones cannot
    storage = "bfloat16" if cfg.effective_bits == 4 and layout.shards_weights else None
    model, tokenizer = load_for(cfg, quant_storage=storage)
    # each process takes batch_size records a step: enough records for the global batch of every step
    train, val = sft_data(dataclasses.replace(cfg, batch_size=cfg.batch_size * world), tokenizer)
    result, _ = finetune(cfg, train, val, model=model, tokenizer=tokenizer, layout=layout,
                         listeners=[print_step] if rank == 0 else [], **overrides)
    real = dist.get_world_size() if dist.is_initialized() else 1  # the group training really ran in
    if real != want:
        sys.exit(f"train.py: trained in a group of {{real}} processes, expected {{want}} (see README.md)")
    if rank == 0:
        if os.environ.get("FTLAB_WORLD_FILE"):  # tests read the world size the run had
            with open(os.environ["FTLAB_WORLD_FILE"], "w") as f:
                f.write(str(real))
        print(f"ftlab: world size {{real}} ({{layout}}); saved to {{result.saved_to}}; loss "
              f"{{result.first_loss:.4f}} -> {{result.last_loss:.4f}}", flush=True)
        summary = dict(world_size=real, steps=result.steps, losses=result.losses, seconds=result.seconds,
                       saved_to=result.saved_to)
        print(RESULT + json.dumps(summary), flush=True)  # run_launch reads it


def print_step(event):
    print(EVENT + json.dumps(event, default=str), flush=True)  # run_launch hands it to the notebook's plots
    if event.get("kind") == "step":
        print(f"step {{event['step']}}/{{event['max_steps']}} loss {{event['loss']:.4f}}", flush=True)


EVENT, RESULT = "{event}", "{result}"


if __name__ == "__main__":
    main()
"""


def _readme(layout: Layout, main_address: str | None, main_port: int) -> str:
    n, m = layout.num_gpus, layout.num_machines
    addr = main_address or "127.0.0.1"
    tr = f"torchrun --nproc_per_node {n}" + (f" --nnodes {m} --node_rank $RANK --master_addr {addr} "
                                              f"--master_port {main_port}" if m > 1 else "") + " train.py"
    acc = "accelerate launch --config_file accelerate_config.yaml" + (
        " --machine_rank $RANK" if m > 1 else "") + " train.py"
    return f"""# ftlab launch files: {layout}

`train.py` trains with `config.json` (a TrainConfig) and saves the trained weights (the whole, gathered
tensors, written by the first process only) to `output_dir/adapter`. World size: {layout.world} processes.

With accelerate:

    {acc}

With torchrun:

    {tr}
""" + (f"""
On each of the {m} machines `$RANK` is that machine's number (0 on {addr}, the main one).
With SLURM: `sbatch launch.slurm` (srun starts one torchrun a machine, rendezvous on the first node).
""" if m > 1 else "") + f"""
A try on this machine's CPU (gloo, 2 processes; each process asserts and prints the world size):

    {CPU_ENV}=1 OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 train.py

(`accelerate launch --cpu --num_processes 2` starts ONE process: use torchrun for a CPU try.)
"""


def _slurm(layout: Layout, main_port: int) -> str:
    return f"""#!/bin/bash
#SBATCH --job-name=ftlab
#SBATCH --nodes={layout.num_machines}
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node={layout.num_gpus}
#SBATCH --cpus-per-task=8
# one torchrun a machine; they meet at the first node of the allocation (c10d rendezvous)
MAIN=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
srun torchrun --nnodes {layout.num_machines} --nproc_per_node {layout.num_gpus} \\
  --rdzv_id "$SLURM_JOB_ID" --rdzv_backend c10d --rdzv_endpoint "$MAIN:{main_port}" train.py
"""


def write_launch(cfg, folder, *, strategy: str = "ddp", num_gpus: int = 1, num_machines: int = 1,
                 offload_optimizer: bool = False, offload_params: bool = False, main_address: str | None = None,
                 main_port: int = 29500) -> dict:
    """Write the launch files of a run of `cfg` on `num_gpus` GPUs × `num_machines` machines into `folder`.
    Checked first (Layout.build with the config's bits; several machines need main_address). Returns
    {name: path} for train.py, config.json, accelerate_config.yaml, README.md, ds_config.json (ZeRO) and
    launch.slurm (several machines)."""
    if not isinstance(cfg, TrainConfig):
        raise ConfigError("cfg", cfg, "a TrainConfig (ftlab.config.TrainConfig(model=..., ...))")
    cfg.validate()
    layout = Layout.build(num_gpus=num_gpus, strategy=strategy, offload_optimizer=offload_optimizer,
                          offload_params=offload_params, num_machines=num_machines, bits=cfg.effective_bits,
                          optimizer=cfg.optimizer)
    if layout.num_machines > 1 and main_address is None:
        raise ConfigError("main_address", None, f"the address of the first machine (its IP or host name) with "
                          f"num_machines={layout.num_machines}: the others meet there")
    if main_address is not None:
        main_address = check_address(main_address)
    main_port = check_int("main_port", main_port, 1, 65535)
    folder = Path(check_text("folder", os.fspath(folder) if isinstance(folder, os.PathLike) else folder)).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ConfigError("folder", str(folder), "a folder (this path is an existing file)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError("folder", str(folder), f"a folder that can be made here ({e.strerror})") from None
    args = {k: getattr(layout, k) for k in ("num_gpus", "strategy", "offload_optimizer", "offload_params",
                                            "num_machines")}
    files = {"train.py": TRAIN_PY.format(layout=layout, layout_args=args, cpu_env=CPU_ENV, event=EVENT, result=RESULT),
             "config.json": json.dumps(cfg.to_dict(), indent=1),
             "accelerate_config.yaml": accelerate_yaml(layout, main_address, main_port),
             "README.md": _readme(layout, main_address, main_port)}
    if layout.zero_stage is not None:
        files["ds_config.json"] = json.dumps(deepspeed_config(layout), indent=1)
    if layout.num_machines > 1:
        files["launch.slurm"] = _slurm(layout, main_port)
    out = {}
    for name, text in files.items():
        (folder / name).write_text(text)
        out[name] = str(folder / name)
    return out


__all__ = ["CPU_ENV", "EVENT", "RESULT", "accelerate_yaml", "deepspeed_config", "write_launch"]
