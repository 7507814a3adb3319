"""Issue #21 check 5, scaling out: ftlab's launch path (ftlab.distributed.write_launch + run_launch, i.e. the
written train.py under torchrun) at world size 1, for FSDP2 full fine-tuning, DeepSpeed ZeRO-3 full fine-tuning
and QLoRA under FSDP2 (train.py packs the 4-bit weights as bf16: bnb_4bit_quant_storage). For each: ftlab's
per-GPU estimate (estimate_memory(cfg, num_gpus=1, strategy=...)) beside the measured peak of the rank-0 process,
the losses of the few steps, the wall time, and whether it ran (an error is recorded in its row, not fatal).

Where the measured peak comes from:
  events_peak_gib     the largest `peak_memory_gib` of rank 0's step events (ftlab.report.memory_now:
                      torch.cuda.max_memory_allocated() at each logged step), which run_launch hands over; the
                      same number ftlab writes to output_dir/run.json as memory_measured_gib
  probe               what this script's probe saw inside rank 0 (a sitecustomize.py put first on the children's
                      PYTHONPATH; ftlab's code is untouched): at the trainer's on_train_end the model as trained
                      (which engine wrapped it, FSDP2 DTensors, ZeRO-3 partitioned parameters, the 4-bit storage
                      dtype) and max_memory_allocated; at exit the whole run's max_memory_allocated (the save
                      included), max_memory_reserved and the device memory in use. --no-probe leaves it out.

On a CPU (no CUDA, or --smoke) the same launch path runs on CPU processes (ftlab's FTLAB_CPU try) with a
2-layer SmolLM2-135M (random weights, hf_config from scripts/measure_memory.py) and the embedded tokenizer, a
few steps of short sequences; memory is then the process's RSS (no ratio to the GPU estimate).

    python scripts/gpu_scale_out.py --out scale_out.json                 # GPU: smollm2-135m-instruct, 5 x 4 x 256
    python scripts/gpu_scale_out.py --out /tmp/scale_out_smoke.json --smoke   # CPU smoke
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import measure_memory  # noqa: E402
from ftlab.config import TrainConfig  # noqa: E402
from ftlab.errors import FtlabError  # noqa: E402
from ftlab.layout import Layout  # noqa: E402
from ftlab.memory import estimate_memory  # noqa: E402

# name -> (strategy, method, bits): the three set-ups of issue #21, check 5
VARIANTS = {
    "fsdp_full": ("fsdp", "full", 32),    # FSDP2 full shard, full fine-tuning, fp32 weights computed in bf16
    "zero3_full": ("zero3", "full", 32),  # DeepSpeed ZeRO-3, full fine-tuning, the same
    "fsdp_qlora": ("fsdp", "qlora", 4),   # QLoRA under FSDP2: 4-bit NF4 packed as bf16
}
ABORT = "terminate called without an active exception"  # DeepSpeed, at exit, now and then (shared/STACK.md)
PROBE_FILE, PROBE_TAG, PROBE_OMP = "FTLAB_SCALE_PROBE_FILE", "FTLAB_SCALE_TAG", "FTLAB_SCALE_OMP"
GIB = 2**30

# Put first on the children's PYTHONPATH: runs in every process torchrun starts, before train.py.
PROBE = r'''
"""Written by scripts/gpu_scale_out.py: a measurement probe for the launched train.py (rank 0 only)."""
import atexit
import importlib.abc
import json
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if os.environ.get("FTLAB_SCALE_OMP"):  # the smoke's one thread a process (run_launch sets cpu_count // n)
    os.environ["OMP_NUM_THREADS"] = os.environ["FTLAB_SCALE_OMP"]
_OUT = os.environ.get("FTLAB_SCALE_PROBE_FILE")
_SEEN = {}


def _cuda():
    import torch
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    free, total = torch.cuda.mem_get_info()
    return {"max_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
            "max_reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
            "device_used_gib": (total - free) / 2**30}


def _engine():
    try:
        from accelerate.state import AcceleratorState
        st = AcceleratorState._shared_state
        out = {"distributed_type": str(st.get("distributed_type")), "fsdp_plugin": st.get("fsdp_plugin") is not None}
        if st.get("fsdp_plugin") is not None:
            out["fsdp_version"] = getattr(st["fsdp_plugin"], "fsdp_version", None)
        ds = st.get("deepspeed_plugins")
        if ds:
            plugin = next(iter(ds.values())) if isinstance(ds, dict) else ds
            out["zero_stage"] = getattr(plugin, "zero_stage", None)
        return out
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}


def _model(model):
    if model is None:
        return {}
    params = list(model.named_parameters())
    kinds = sorted({type(m).__name__ for m in model.modules() if type(m).__name__.startswith("FSDP")})
    p4 = [p for _, p in params if type(p).__name__ == "Params4bit"]
    dt = {}
    for _, p in params:
        dt[str(p.dtype)] = dt.get(str(p.dtype), 0) + p.numel()
    return {"class": type(model).__name__, "fsdp_module_classes": kinds[:8], "fsdp_modules": len(kinds),
            "dtensor_params": sum(type(p).__name__ == "DTensor" or hasattr(p, "full_tensor") for _, p in params),
            "zero3_params": sum(hasattr(p, "ds_id") for _, p in params),
            "params4bit": len(p4), "params4bit_storage": sorted({str(p.dtype) for p in p4}),
            "trainable": sum(p.requires_grad for _, p in params), "params": len(params),
            "numel_by_dtype": dt}


def _wrap(module):
    cls = module.ReportCallback
    end = cls.on_train_end

    def on_train_end(self, args, state, control, **kw):
        try:
            _SEEN["train_end"] = {**_cuda(), "model": _model(kw.get("model")), "engine": _engine()}
        except Exception as e:
            _SEEN["train_end"] = {"error": f"{type(e).__name__}: {e}"}
        return end(self, args, state, control, **kw)
    cls.on_train_end = on_train_end


class _Hook(importlib.abc.MetaPathFinder):  # wraps ftlab.report when train.py imports it
    def find_spec(self, name, path, target=None):
        if name != "ftlab.report":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                run = spec.loader.exec_module

                def exec_module(module, run=run):
                    run(module)
                    _wrap(module)
                spec.loader.exec_module = exec_module
                return spec
        return None


def _write():
    try:
        import torch  # noqa: F401
        _SEEN["exit"] = {**_cuda(), "engine": _engine()}
    except Exception as e:
        _SEEN["exit"] = {"error": f"{type(e).__name__}: {e}"}
    with open(_OUT, "w") as f:
        json.dump(_SEEN, f, default=str)


if _OUT and os.environ.get("RANK") == "0":  # torchrun's rank-0 worker (the launcher itself has no RANK)
    sys.meta_path.insert(0, _Hook())
    atexit.register(_write)

# chain to a sitecustomize further down the path, if there is one
_me = sys.modules.pop("sitecustomize", None)
_path = sys.path[:]
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
try:
    import sitecustomize  # noqa: F401
except ImportError:
    pass
finally:
    sys.path[:] = _path
    if _me is not None:
        sys.modules["sitecustomize"] = _me
'''


def versions() -> dict:
    out = {}
    for name in ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "deepspeed"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def gpu_preset(name: str) -> str:
    """ftlab.gpus' entry for the CUDA device's name (the estimate's CUDA context and fit are that GPU's)."""
    import torch
    if "A100" in name:
        return "A100-80GB" if torch.cuda.get_device_properties(0).total_memory > 50 * GIB else "A100-40GB"
    for part, preset in (("H200", "H200"), ("H100", "H100-80GB"), ("A6000", "RTX-A6000"), ("A10G", "A10G"),
                         ("4090", "RTX-4090"), ("3090", "RTX-3090"), ("L4", "L4"), ("T4", "T4")):
        if part in name:
            return preset
    return "H100-80GB"


def smoke_model(folder: Path) -> str:
    """SmolLM2-135M's shapes with 2 layers, random weights, and the embedded tokenizer, saved as a model folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from ftlab.models import embedded_folder
    if (folder / "config.json").is_file():
        return str(folder)
    cfg = measure_memory.hf_config("smollm2-135m")
    cfg.num_hidden_layers = 2
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    AutoTokenizer.from_pretrained(embedded_folder("smollm2-135m-instruct")).save_pretrained(folder)
    return str(folder)


def kill_tagged(tag: str) -> list:
    """End the processes this script's launch left behind (run_launch's timeout kills torchrun, not its
    workers): those whose environment carries this run's tag, by their id."""
    killed, me, mark = [], os.getpid(), f"{PROBE_TAG}={tag}".encode()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == me:
            continue
        try:
            if mark in (d / "environ").read_bytes().split(b"\0"):
                os.kill(int(d.name), signal.SIGKILL)
                killed.append(int(d.name))
        except (OSError, ValueError):
            continue
    return killed


def root_cause(text: str) -> str | None:
    """The exception line of train.py's own traceback in a failed launch's output (not torchrun's)."""
    lines = [re.sub(r"^\[rank\d+\]:\s*", "", line).strip() for line in text.splitlines()]
    hits = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b.*:", line)
            and "ChildFailedError" not in line]
    return hits[-1][:500] if hits else None


def estimate_row(cfg: TrainConfig, strategy: str) -> dict:
    try:
        est = estimate_memory(cfg, num_gpus=1, strategy=strategy)
    except Exception as e:
        return {"error": f"{type(e).__name__}: {str(e)[:500]}"}
    return {"peak_allocated_gib": est.peak_allocated_gib, "total_gib": est.total_gib,
            "components_gib": {k: round(v, 4) for k, v in est.components.items()},
            "fits": str(est.fits) if est.fits is not None else None, "text": str(est)}


def run_variant(name: str, args, model: str, gpu: str, work: Path, probe_dir: Path | None, cuda: bool) -> dict:
    """One set-up through write_launch + run_launch, the written train.py run as it is."""
    from ftlab.distributed import run_launch, write_launch
    strategy, method, bits = VARIANTS[name]
    label = name
    row = {"name": label, "strategy": strategy, "method": method, "bits": bits, "ran": False, "error": None}
    out_dir, launch = work / label / "run", work / label / "launch"
    try:
        cfg = TrainConfig(model=model, method=method, bits=bits, max_steps=args.steps, batch_size=args.batch,
                          seq_len=args.seq, learning_rate=args.learning_rate, eval_examples=0, gpu=gpu,
                          gradient_checkpointing=args.gradient_checkpointing, output_dir=str(out_dir))
    except FtlabError as e:
        row["error"] = f"TrainConfig refused: {type(e).__name__}: {e}"
        return row
    layout = Layout(num_gpus=1, strategy=strategy)
    # what train.py passes to load_for: 4-bit packed as bf16 where the weights are split (FSDP, ZeRO-3)
    row["quant_storage"] = "bfloat16" if cfg.effective_bits == 4 and layout.shards_weights else None
    row["estimate"] = estimate_row(cfg, strategy)
    try:
        files = write_launch(cfg, launch, strategy=strategy, num_gpus=1)
    except FtlabError as e:
        row["error"] = f"write_launch refused: {type(e).__name__}: {e}"
        return row
    row["launch_files"] = sorted(files)
    events, tag = [], f"{os.getpid()}-{label}"
    probe_file = work / label / "probe.json"
    env = {PROBE_TAG: tag, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if probe_dir is not None:
        env[PROBE_FILE] = str(probe_file)
        env["PYTHONPATH"] = os.pathsep.join([str(probe_dir), str(Path(__file__).resolve().parent.parent),
                                             *filter(None, [os.environ.get("PYTHONPATH")])])
    if not cuda:
        env[PROBE_OMP] = "1"
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    summary, t0 = None, time.perf_counter()
    try:
        summary = run_launch(launch, 1, listeners=[events.append], timeout_s=args.timeout)
    except Exception as e:
        text = str(e)
        row["error"] = f"{type(e).__name__}: {text[-3000:]}"
        row["error_line"] = root_cause(text)
        row["aborted_at_exit"] = ABORT in text
    finally:
        row["wall_s"] = time.perf_counter() - t0
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        left = kill_tagged(tag)
        if left:
            row["killed_leftover_pids"] = left
    steps = [e for e in events if e.get("kind") == "step"]
    record = {}
    if (out_dir / "run.json").is_file():  # ftlab's own record of the run (rank 0), also after a failure
        record = json.loads((out_dir / "run.json").read_text())
    row["run_json"] = {k: record.get(k) for k in ("status", "error", "steps", "seconds", "memory_estimated_gib",
                                                  "memory_estimated_kind", "memory_measured_gib",
                                                  "memory_measured_kind", "trainable_parameters",
                                                  "total_parameters")} if record else None
    if summary is not None:
        row.update(world_size=summary.get("world_size"), steps=summary.get("steps"), losses=summary.get("losses"),
                   train_seconds=summary.get("seconds"), saved_to=summary.get("saved_to"))
    else:  # the run failed or aborted at exit: what its events and run.json say
        row.update(world_size=None, steps=record.get("steps", steps[-1]["step"] if steps else 0),
                   losses=record.get("losses") or [[e["step"], e["loss"]] for e in steps],
                   train_seconds=record.get("seconds"), saved_to=record.get("saved_to"))
    row["ran"] = bool(row["steps"] and row["steps"] >= args.steps and
                      (summary is not None or record.get("status") == "finished"))
    kinds = {e.get("memory_kind") for e in steps if e.get("memory_kind")}
    peaks = [e.get("peak_memory_gib", e.get("memory_gib")) for e in steps]
    peaks = [p for p in peaks if p is not None]
    row["measured"] = {"events_peak_gib": max(peaks) if peaks else None, "events_kind": sorted(kinds),
                       "step_events": len(steps)}
    if probe_file.is_file():
        row["probe"] = json.loads(probe_file.read_text())
    elif probe_dir is not None:
        row["probe"] = None
    est = row["estimate"].get("peak_allocated_gib")
    if cuda and est and row["measured"]["events_peak_gib"]:
        row["measured_over_estimate"] = row["measured"]["events_peak_gib"] / est
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true", help="CPU-sized run (default when there is no CUDA GPU)")
    ap.add_argument("--only", nargs="*", choices=list(VARIANTS), default=None)
    ap.add_argument("--model", default=None, help="preset or folder (GPU default: smollm2-135m-instruct; smoke "
                    "default: a 2-layer SmolLM2-135M with random weights)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--seq", type=int, default=None)
    ap.add_argument("--learning_rate", type=float, default=1e-4)
    ap.add_argument("--gradient_checkpointing", action="store_true")
    ap.add_argument("--gpu", default=None, help="ftlab.gpus entry the estimate is made for (default: this GPU's)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds a launch may take (killed after)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--no-probe", action="store_true")
    args = ap.parse_args(argv)
    import torch
    cuda = torch.cuda.is_available()
    smoke = args.smoke or not cuda
    args.steps = args.steps or (2 if smoke else 5)
    args.batch = args.batch or (2 if smoke else 4)
    args.seq = args.seq or (128 if smoke else 256)  # ftlab refuses < ~104 for the e-mail data
    args.timeout = args.timeout or (300.0 if not cuda else 90.0)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ftlab-scale-out-"))
    work.mkdir(parents=True, exist_ok=True)
    gpu_name = torch.cuda.get_device_name(0) if cuda else "cpu"
    gpu = args.gpu or (gpu_preset(gpu_name) if cuda else "H100-80GB")
    model = args.model or (smoke_model(work / "smoke-model") if smoke else "smollm2-135m-instruct")
    probe_dir = None
    if not args.no_probe:
        probe_dir = work / "probe"
        probe_dir.mkdir(exist_ok=True)
        (probe_dir / "sitecustomize.py").write_text(PROBE)
    names = args.only or list(VARIANTS)
    settings = {"model": model, "steps": args.steps, "batch_size": args.batch, "seq_len": args.seq,
                "learning_rate": args.learning_rate, "gradient_checkpointing": args.gradient_checkpointing,
                "estimate_gpu": gpu, "world_size": 1, "smoke": smoke, "device": "cuda" if cuda else "cpu",
                "timeout_s": args.timeout, "variants": {n: dict(zip(("strategy", "method", "bits"), VARIANTS[n]))
                                                        for n in names},
                "launch": "ftlab.distributed.write_launch(cfg, folder, strategy=..., num_gpus=1) then "
                          "run_launch(folder, 1): torchrun --nproc_per_node 1 train.py",
                "probe": not args.no_probe, "workdir": str(work)}
    out = {"what": "ftlab's launch path (write_launch + run_launch: train.py under torchrun) at world size 1 for "
                   "FSDP2 and ZeRO-3 full fine-tuning and QLoRA under FSDP2 (4-bit packed as bf16): the per-GPU "
                   "estimate beside rank 0's measured peak, the losses, the wall time",
           "gpu": gpu_name, "date": datetime.now().astimezone().isoformat(timespec="seconds"),
           "versions": versions(), "settings": settings, "complete": False, "results": []}
    rows = out["results"]
    Path(args.out).write_text(json.dumps(out, indent=1, default=str))  # a file even if nothing finishes
    # a timeout of the caller (SIGTERM) still ends this run's torchrun workers (run_variant's finally)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for name in names:
        print(f"[{name}] launching ...", flush=True)
        row = run_variant(name, args, model, gpu, work, probe_dir, cuda)
        rows.append(row)
        print(summary_line(row, cuda), flush=True)
        Path(args.out).write_text(json.dumps(out, indent=1, default=str))  # what ran so far
    out["complete"] = True
    Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    print(f"wrote {args.out}")
    return out


def summary_line(row: dict, cuda: bool) -> str:
    est, meas = row.get("estimate") or {}, row.get("measured") or {}
    losses = row.get("losses") or []
    loss = " -> ".join(f"{v:.3f}" for _, v in (losses[:1] + losses[-1:])) if losses else "no loss"
    kind = "allocated" if cuda else "RSS"
    m = meas.get("events_peak_gib")
    e = est.get("peak_allocated_gib")
    text = (f"  {row['name']}: {'ran' if row['ran'] else 'FAILED'}; {row.get('steps')} steps, loss {loss}; "
            f"wall {row.get('wall_s', 0):.1f} s; estimate {e:.2f} GiB allocated" if e is not None else
            f"  {row['name']}: {'ran' if row['ran'] else 'FAILED'}; estimate: {est.get('error')}")
    text += f"; measured peak {m:.2f} GiB {kind}" if m is not None else "; measured: none"
    if row.get("measured_over_estimate"):
        text += f" ({row['measured_over_estimate']:.2f}x the estimate)"
    engine = ((row.get("probe") or {}).get("train_end") or {}).get("engine", {}).get("distributed_type")
    if engine:
        text += f"; engine {engine}"
    if row.get("error"):
        text += "\n    error: " + (row.get("error_line") or row["error"].strip().splitlines()[-1])[:300]
    return text


if __name__ == "__main__":
    main()
