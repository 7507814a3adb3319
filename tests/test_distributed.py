"""Several processes on the CPU (gloo): DDP, DeepSpeed ZeRO-2/3 and FSDP2 through ftlab's finetune (FSDP2 through
torch's fully_shard: accelerate turns FSDP into DDP on a CPU), the launch files run as written, a launch from a
notebook, and what launches refuse. Every run asserts its world size inside the run (see /work/shared/STACK.md:
some launchers quietly start one process)."""
import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from ftlab.config import TrainConfig
from ftlab.errors import ConfigError

pytestmark = pytest.mark.processes
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")
ABORT = "terminate called without an active exception"  # DeepSpeed, about one exit in five (STACK.md)

# Run under torchrun (or alone): finetune with LoRA on the tiny model; rank 0 writes what the run saw.
CHILD = r'''
import dataclasses, json, os, sys
mode, model_dir, out, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
import torch
import torch.distributed as dist
from accelerate.state import PartialState
from ftlab.config import TrainConfig
from ftlab.data import sft_data
from ftlab.distributed import trainer_overrides
from ftlab.layout import Layout
from ftlab.models import load_for
from ftlab.train import finetune

world = int(os.environ.get("WORLD_SIZE", "1"))
cfg = TrainConfig(model=model_dir, method="lora", max_steps=4, batch_size=batch, seq_len=128, learning_rate=1e-2,
                  output_dir=out, eval_examples=0)
strategy, _, offload = mode.partition("+")  # "zero2+offload": the optimizer on the CPU
over = trainer_overrides(Layout.build(num_gpus=world, strategy=strategy, offload_optimizer=offload == "offload"), cfg)
model, tok = load_for(cfg)
train, _ = sft_data(dataclasses.replace(cfg, batch_size=4), tok)  # the same records whatever the world
steps, evals = [], []
# "+eval": validation records and the held-out loss before training too, as the launch files' train.py runs
val = sft_data(dataclasses.replace(cfg, eval_examples=4), tok)[1] if mode.endswith("+eval") else None


def listen(e):
    if e["kind"] == "step":
        steps.append(e["loss"])
    elif e["kind"] == "eval":
        evals.append((e["step"], e["eval_loss"]))


result, model = finetune(cfg, train, val, model=model, tokenizer=tok, eval_before=val is not None,
                         listeners=[listen], **over)
ids = torch.tensor([tok("Subject line for an email about the quarterly report")["input_ids"]])
with torch.no_grad():  # every rank: under ZeRO-3 the forward gathers the weights from all of them
    logits = model(input_ids=ids).logits.float()
if int(os.environ.get("RANK", "0")) == 0:
    torch.save(logits, os.path.join(out, "logits.pt"))
    with open(os.path.join(out, "run.json"), "w") as f:
        json.dump({"world": dist.get_world_size() if dist.is_initialized() else 1, "losses": steps, "evals": evals,
                   "saved_to": result.saved_to, "distributed_type": str(PartialState().distributed_type),
                   "partitioned": any(hasattr(p, "ds_id") and p.numel() == 0 for p in model.parameters()),
                   "optimizer_on_cpu": bool(over.get("deepspeed", {}).get("zero_optimization", {})
                                            .get("offload_optimizer"))}, f)
'''


def _env(**extra) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": ROOT, **extra}
    env.pop("ACCELERATE_USE_CPU", None)
    return env


def _run(args, env, *, timeout=240, deepspeed=False, cwd=None):
    """Run a command; a DeepSpeed run that aborted at exit after finishing is run ONCE more, and says so."""
    for attempt in (1, 2):
        p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
        if p.returncode == 0 or not (deepspeed and ABORT in p.stderr and attempt == 1):
            break
        print(f"RETRY: DeepSpeed aborted at exit ({ABORT!r}); running it once more", file=sys.stderr)
    assert p.returncode == 0, f"rc={p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    return p


def _child(tmp_path, mode, model_dir, out, batch, nproc, **env):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    args = ([TORCHRUN, "--nproc_per_node", str(nproc), "--master_port", str(_port())] if nproc > 1
            else [sys.executable])
    _run(args + [str(script), mode, model_dir, str(out), str(batch)], _env(**env), deepspeed=mode.startswith("zero"))
    return json.loads((out / "run.json").read_text())


def _port() -> int:
    from ftlab.launch_run import free_port
    return free_port()


def _reload_logits(model_dir, adapter, text="Subject line for an email about the quarterly report"):
    """The saved adapter put on a fresh base in THIS (one) process, and its logits for the fixed input."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from ftlab.trained import load_trained
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = load_trained(AutoModelForCausalLM.from_pretrained(model_dir), adapter).eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([tok(text)["input_ids"]])).logits.float()


def test_ddp_two_processes_match_one_process_with_the_same_global_batch(tiny_folder, tmp_path):
    two = _child(tmp_path, "ddp", tiny_folder, tmp_path / "two", 2, 2, ACCELERATE_USE_CPU="1")
    one = _child(tmp_path, "ddp", tiny_folder, tmp_path / "one", 4, 1)
    assert two["world"] == 2 and one["world"] == 1
    assert "MULTI_CPU" in two["distributed_type"]
    assert len(two["losses"]) == len(one["losses"]) == 4
    # Same records, same order (accelerate hands rank r the r-th per-device slice of each global batch), and
    # TRL averages the loss over the tokens of the whole global batch, so 2 x 2 and 1 x 4 are the same sums in
    # another order: float32 rounding only (measured: <= 2e-6 over 4 steps). 1e-4 leaves room for other BLAS.
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-4, abs=1e-4)
    assert os.path.exists(os.path.join(two["saved_to"], "adapter_model.safetensors"))
    # the saved adapter reloaded in this process answers as the trained model did in rank 0: equal up to float32
    # rounding (the two processes may run their matmuls with different thread counts: measured up to 2e-7)
    reloaded = _reload_logits(tiny_folder, two["saved_to"])
    assert reloaded == pytest.approx(torch.load(tmp_path / "two" / "logits.pt"), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("stage", ["zero2", "zero3+eval", "zero2+offload"])
def test_deepspeed_zero_on_cpu_saves_a_whole_adapter_that_reloads_in_one_process(tiny_folder, tmp_path, stage):
    run = _child(tmp_path, stage, tiny_folder, tmp_path / stage, 2, 2, DS_ACCELERATOR="cpu")
    assert run["world"] == 2 and "DEEPSPEED" in run["distributed_type"]
    assert run["partitioned"] == stage.startswith("zero3")  # ZeRO-3 really split the weights in the run
    if stage.endswith("offload"):  # the run had the optimizer offloaded, and trained: DeepSpeed refuses the trainer's
        assert run["optimizer_on_cpu"]  # AdamW with it unless zero_force_ds_cpu_optimizer is False (a crash before)
    assert len(run["losses"]) == 4 and run["losses"][-1] < run["losses"][0]
    if stage.endswith("+eval"):  # the held-out loss before (step 0) and after: an evaluation before training used
        # to leave DeepSpeed's inference engine in the trainer, and the first backward failed on None
        assert [s for s, _ in run["evals"]] == [0, 4] and run["evals"][1][1] < run["evals"][0][1], run["evals"]
    reloaded = _reload_logits(tiny_folder, run["saved_to"])
    trained = torch.load(tmp_path / stage / "logits.pt")
    # the whole gathered tensors were saved: the same logits, to float32 rounding
    assert torch.allclose(reloaded, trained, atol=1e-5), (reloaded - trained).abs().max()


# FSDP2 through torch's fully_shard over a 2-process gloo mesh: LoRA on the tiny model, a few steps on one batch.
FSDP_CHILD = r'''
import json, os, sys
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from transformers import AutoModelForCausalLM, AutoTokenizer
from ftlab.config import TrainConfig
from ftlab.distributed import save_on_main
from ftlab.methods import apply_method

model_dir, out = sys.argv[1], sys.argv[2]
dist.init_process_group("gloo")
mesh = init_device_mesh("cpu", (dist.get_world_size(),))
cfg = TrainConfig(model=model_dir, method="lora", output_dir=out, learning_rate=1e-2)
tok = AutoTokenizer.from_pretrained(model_dir)
torch.manual_seed(0)
model = apply_method(AutoModelForCausalLM.from_pretrained(model_dir), cfg)
full = {n: p.numel() for n, p in model.named_parameters()}
for layer in model.base_model.model.model.layers:
    fully_shard(layer, mesh=mesh)
fully_shard(model, mesh=mesh)
local = {n: (p.to_local().numel(), type(p).__name__) for n, p in model.named_parameters()}
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate)
ids = torch.tensor([tok("Write a subject line: the quarterly report is due on Friday.")["input_ids"]] * 2)
losses = []
for _ in range(5):
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    losses.append(loss.item())
saved = save_on_main(model, os.path.join(out, "adapter"), cfg)
probe = torch.tensor([tok("Subject line for an email about the quarterly report")["input_ids"]])
with torch.no_grad():
    logits = model(input_ids=probe).logits.float()
if dist.get_rank() == 0:
    torch.save(logits, os.path.join(out, "logits.pt"))
    with open(os.path.join(out, "run.json"), "w") as f:
        json.dump({"world": dist.get_world_size(), "losses": losses, "full": full, "local": local,
                   "saved_to": saved}, f)
dist.destroy_process_group()
'''


def test_fsdp2_fully_shard_on_cpu_halves_the_shards_trains_and_saves_whole_tensors(tiny_folder, tmp_path):
    script, out = tmp_path / "fsdp_child.py", tmp_path / "fsdp"
    script.write_text(FSDP_CHILD)
    out.mkdir()
    _run([TORCHRUN, "--nproc_per_node", "2", "--master_port", str(_port()), str(script), tiny_folder, str(out)],
         _env(), timeout=180)
    run = json.loads((out / "run.json").read_text())
    assert run["world"] == 2
    lora = [n for n in run["full"] if "lora_A" in n]
    assert lora and all(run["local"][n][1] == "DTensor" for n in run["full"])
    # each process holds half of every weight (dim 0 split in 2; all sizes here are even)
    assert all(run["local"][n][0] * 2 == run["full"][n] for n in run["full"]), run["local"]
    assert run["losses"][-1] < run["losses"][0] - 0.1, run["losses"]
    reloaded = _reload_logits(tiny_folder, run["saved_to"])
    assert torch.allclose(reloaded, torch.load(out / "logits.pt"), atol=1e-5)


def test_write_launch_files_run_as_written_on_two_cpu_processes(tiny_folder, tmp_path, monkeypatch):
    from ftlab.distributed import run_launch, write_launch
    cfg = TrainConfig(model=tiny_folder, method="lora", max_steps=2, batch_size=1, seq_len=128, eval_examples=4,
                      output_dir=str(tmp_path / "run"))
    files = write_launch(cfg, tmp_path / "launch", strategy="ddp", num_gpus=2)
    assert set(files) == {"train.py", "config.json", "accelerate_config.yaml", "README.md"}
    readme = open(files["README.md"]).read()
    assert "accelerate launch --config_file accelerate_config.yaml train.py" in readme
    assert "torchrun --nproc_per_node 2 train.py" in readme
    yaml = open(files["accelerate_config.yaml"]).read()
    assert "distributed_type: MULTI_GPU" in yaml and "num_processes: 2" in yaml
    world = tmp_path / "world.txt"
    # run_launch runs README's torchrun line as a child process tree and hands rank 0's events over
    monkeypatch.setenv("FTLAB_WORLD_FILE", str(world))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    events = []
    done = run_launch(tmp_path / "launch", 2, listeners=[events.append], cpu=True, timeout_s=180)
    assert world.read_text() == "2"  # written by rank 0 from the process group the run trained in
    assert done["world_size"] == 2 and done["steps"] == 2 and len(done["losses"]) == 2
    assert [e["step"] for e in events if e["kind"] == "step"] == [1, 2]
    assert os.path.exists(tmp_path / "run" / "adapter" / "adapter_model.safetensors")
    # run.json's estimate is the layout's, per GPU (it was one GPU's), and says so
    from ftlab.memory import estimate_memory
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert "per GPU under" in record["memory_estimated_kind"] and "2 GPUs" in record["memory_estimated_kind"]
    assert record["memory_estimated_gib"] == estimate_memory(cfg, num_gpus=2, strategy="ddp").peak_allocated_gib
    with pytest.raises(ConfigError) as e:
        run_launch(tmp_path, 2)
    assert e.value.field == "folder"


def test_run_launch_stopped_at_its_timeout_leaves_no_worker_behind(tiny_folder, tmp_path, monkeypatch):
    """torchrun's workers run in sessions of their own: killing torchrun alone left them training (and holding
    their GPU memory). At timeout_s torchrun is asked to stop them (SIGTERM), then killed if it hangs."""
    import psutil
    from ftlab.distributed import run_launch, write_launch
    from ftlab.errors import FtlabError
    cfg = TrainConfig(model=tiny_folder, method="lora", max_steps=10_000, batch_size=1, seq_len=128,
                      output_dir=str(tmp_path / "run"))
    folder = tmp_path / "launch"
    write_launch(cfg, folder, strategy="ddp", num_gpus=2)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # kept: run_launch no longer overrides the caller's setting
    with pytest.raises(ConfigError, match=r"timeout_s=0(\.0)? is not allowed: a finite number > 0"):
        run_launch(folder, 2, cpu=True, timeout_s=0)
    with pytest.raises(FtlabError) as stopped:
        run_launch(folder, 2, cpu=True, timeout_s=8)
    assert "stopped after timeout_s=8" in str(stopped.value), str(stopped.value)[-3000:]

    def workers():  # torchrun and the processes it started, found by their working folder and script
        return [(p.pid, p.info["status"], p.info["cmdline"]) for p in psutil.process_iter(["cwd", "cmdline", "status"])
                if p.info["cwd"] == str(folder) and p.info["status"] != psutil.STATUS_ZOMBIE
                and any("train.py" in a for a in p.info["cmdline"] or [])]
    deadline = time.time() + 30  # SIGTERM is handled, not instant (torchrun gets 15 s before a SIGKILL)
    while workers() and time.time() < deadline:
        time.sleep(0.5)
    assert workers() == []


def test_write_launch_zero3_several_machines_writes_deepspeed_and_slurm_files(tmp_path):
    from ftlab.distributed import write_launch
    cfg = TrainConfig(output_dir=str(tmp_path / "run"))
    files = write_launch(cfg, tmp_path / "l", strategy="zero3", num_gpus=8, num_machines=2, offload_optimizer=True,
                         offload_params=True, main_address="10.0.0.1", main_port=29400)
    ds = json.loads(open(files["ds_config.json"]).read())
    zero = ds["zero_optimization"]
    assert zero["stage"] == 3 and zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert zero["offload_optimizer"]["device"] == zero["offload_param"]["device"] == "cpu"
    assert ds["bf16"] == {"enabled": "auto"} and ds["train_micro_batch_size_per_gpu"] == "auto"
    yaml = open(files["accelerate_config.yaml"]).read()
    assert "distributed_type: DEEPSPEED" in yaml and "num_processes: 16" in yaml and "10.0.0.1" in yaml
    readme = open(files["README.md"]).read()
    assert "torchrun --nproc_per_node 8 --nnodes 2 --node_rank $RANK --master_addr 10.0.0.1" in readme
    slurm = open(files["launch.slurm"]).read()
    assert "srun torchrun --nnodes 2 --nproc_per_node 8" in slurm and "--rdzv_backend c10d" in slurm
    compile(open(files["train.py"]).read(), "train.py", "exec")


def test_trainer_overrides_for_each_strategy():
    from ftlab.distributed import trainer_overrides
    from ftlab.layout import Layout
    cfg = TrainConfig(gradient_checkpointing=True)
    assert trainer_overrides(Layout.build(num_gpus=2), cfg) == {"ddp_find_unused_parameters": False}
    fs = trainer_overrides(Layout.build(num_gpus=2, strategy="fsdp_grad_op"), cfg)
    assert fs["fsdp"] is True and fs["activation_checkpointing"] is False
    assert fs["fsdp_config"]["fsdp_version"] == 2 and fs["fsdp_config"]["reshard_after_forward"] is False
    assert fs["fsdp_config"]["activation_checkpointing"] is True
    full = trainer_overrides(Layout.build(num_gpus=2, strategy="fsdp", offload_params=True), cfg)["fsdp_config"]
    assert full["reshard_after_forward"] is True and full["cpu_offload"] is True
    # what transformers makes of it: FSDP2, a transformer block a wrap (transformers' own parsing, no process)
    from transformers import TrainingArguments
    plugin = TrainingArguments._process_fsdp_args(type("A", (), {"fsdp": True, "fsdp_config": dict(full),
                                                                   "activation_checkpointing": False})())
    assert plugin["fsdp_version"] == 2 and plugin["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert plugin["reshard_after_forward"] is True and plugin["cpu_offload"] is True


# --- a launch from a notebook ----------------------------------------------------------------------------------

def _notebook_run(model_dir, out):
    import dataclasses
    from ftlab.data import sft_data
    from ftlab.models import load_for
    from ftlab.train import finetune
    cfg = TrainConfig(model=model_dir, method="lora", max_steps=3, batch_size=1, seq_len=128, eval_examples=0,
                      output_dir=out)
    model, tok = load_for(cfg)
    train, _ = sft_data(dataclasses.replace(cfg, batch_size=2), tok)
    result, _ = finetune(cfg, train, None, model=model, tokenizer=tok, eval_before=False)
    return {"world": torch.distributed.get_world_size(), "steps": result.steps, "pid": os.getpid()}


def test_launch_in_notebook_on_cpu_relays_rank0_steps_to_the_parent(tiny_folder, tmp_path):
    from ftlab.distributed import launch_in_notebook
    events = []
    got = launch_in_notebook(_notebook_run, tiny_folder, str(tmp_path / "nb"), num_processes=2,
                             listeners=[events.append])
    assert got["world"] == 2 and got["steps"] == 3 and got["pid"] != os.getpid()
    steps = [e for e in events if e["kind"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3] and all("loss" in e and "memory_gib" in e for e in steps)
    assert events[0]["kind"] == "begin" and events[-1]["kind"] == "end"
    assert os.path.exists(tmp_path / "nb" / "adapter" / "adapter_model.safetensors")


# --- bad inputs: each a ConfigError naming the field -----------------------------------------------------------

@pytest.mark.parametrize("kw, field", [
    (dict(num_machines=2, num_gpus=2), "main_address"),
    (dict(strategy="zero4"), "strategy"),
    (dict(strategy="ddp", offload_optimizer=True), "offload_optimizer"),
    (dict(strategy="fsdp", bits=8), "strategy"),
    (dict(num_gpus=0), "num_gpus"),
])
def test_write_launch_refuses(tmp_path, kw, field):
    from ftlab.distributed import write_launch
    bits = kw.pop("bits", 16)
    cfg = TrainConfig(method="lora", bits=bits, output_dir=str(tmp_path / "run"))
    with pytest.raises(ConfigError) as e:
        write_launch(cfg, tmp_path / "l", **kw)
    assert e.value.field == field and field in str(e.value)
    assert not (tmp_path / "l").exists()


def test_launch_in_notebook_refuses_more_processes_than_gpus(monkeypatch):
    from ftlab.distributed import launch_in_notebook
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.delitem(sys.modules, "bitsandbytes", raising=False)  # peft imports it; this test is about GPUs
    with pytest.raises(ConfigError) as e:
        launch_in_notebook(print, num_processes=2)
    assert e.value.field == "num_processes" and "2" in str(e.value) and "1 GPU" in str(e.value)


def test_launch_in_notebook_refuses_after_bitsandbytes_or_cuda(monkeypatch):
    from ftlab.distributed import launch_in_notebook
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # on a GPU machine, where it matters
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setitem(sys.modules, "bitsandbytes", object())
    with pytest.raises(ConfigError) as e:
        launch_in_notebook(print, num_processes=2)
    assert e.value.field == "bitsandbytes" and "restart the kernel and run this cell first" in str(e.value)
    monkeypatch.delitem(sys.modules, "bitsandbytes")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(ConfigError) as e:
        launch_in_notebook(print, num_processes=2)
    assert e.value.field == "cuda" and "restart the kernel" in str(e.value)


@pytest.mark.parametrize("address", ["a b", "a\nb", "node001\n", "$(whoami)", "a;rm -rf ~", "[::1]", "a: b", "#x", "",
                                     " 10.0.0.1 "])
def test_write_launch_refuses_an_address_a_shell_or_yaml_would_misread(tmp_path, address):
    from ftlab.distributed import write_launch
    with pytest.raises(ConfigError) as e:
        write_launch(TrainConfig(output_dir=str(tmp_path / "run")), tmp_path / "l", num_gpus=2, num_machines=2,
                     main_address=address)
    assert e.value.field == "main_address"


def test_write_launch_expands_the_home_folder_and_quotes_the_address(tmp_path, monkeypatch):
    from ftlab.distributed import write_launch
    monkeypatch.setenv("HOME", str(tmp_path))
    files = write_launch(TrainConfig(output_dir=str(tmp_path / "run")), "~/launch", num_gpus=2, num_machines=2,
                         main_address="fd00::1")
    assert files["train.py"] == str(tmp_path / "launch" / "train.py")
    assert "main_process_ip: 'fd00::1'" in open(files["accelerate_config.yaml"]).read()
    with pytest.raises(ConfigError) as e:
        write_launch(TrainConfig(output_dir=str(tmp_path / "run")), tmp_path / "launch" / "train.py" / "x")
    assert e.value.field == "folder"


def test_qlora_under_a_layout_that_splits_weights_packs_4_bits_as_bf16(tmp_path):
    from ftlab.distributed import write_launch
    from ftlab.quant import quantization_config
    files = write_launch(TrainConfig(method="qlora", bits=4, output_dir=str(tmp_path / "run")), tmp_path / "l",
                         strategy="fsdp", num_gpus=2)
    assert 'layout.shards_weights' in open(files["train.py"]).read()  # load_for(cfg, quant_storage="bfloat16")
    if importlib.util.find_spec("bitsandbytes"):
        assert quantization_config(4, quant_storage=torch.bfloat16).bnb_4bit_quant_storage == torch.bfloat16
    with pytest.raises(ConfigError) as e:
        from ftlab.models import load_model
        load_model("smollm2-135m-instruct", bits=16, quant_storage="bfloat16")
    assert e.value.field == "quant_storage"
