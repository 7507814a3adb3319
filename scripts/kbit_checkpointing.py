"""Reentrant against non-reentrant activation checkpointing on an 8-bit (bitsandbytes LLM.int8) base with LoRA.

ftlab trains 8-bit bases with non-reentrant checkpointing: ftlab.methods calls
peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=...) (peft passes no use_reentrant,
so torch's checkpoint falls back to reentrant), then ftlab.trainer sets activation_checkpointing_kwargs=
{"use_reentrant": False} and the trainer re-enables checkpointing non-reentrant. bitsandbytes' MatMul8bitLt
keeps its input on ctx.tensors, outside save_for_backward, so non-reentrant checkpointing (which only sees
save_for_backward) cannot drop it. This script measures both variants on the same set-up, each in a fresh
process: same random weights (saved once in bf16, reloaded 8-bit as scripts/measure_memory.py's build does),
same LoRA initialisation, same batch, the same plain loop as measure_memory.py (forward, backward, fused
AdamW, zero_grad) for --steps steps. Each variant reports peak allocated, device in use (total - free), the
loss of every step and its LoRA gradients of every step (a .pt file the parent compares); the parent sets
ftlab's estimate beside the numbers and computes a verdict from them.

    python scripts/kbit_checkpointing.py --out kbit_checkpointing.json                  # GPU, ~1.5 min
    python scripts/kbit_checkpointing.py --out /tmp/kbit_smoke.json --smoke             # CPU, tiny model

Variants: non_reentrant (ftlab today), reentrant (peft's prepare_model_for_kbit_training default), none (no
checkpointing; a reference for the gradients, in --smoke by default, on the GPU with --variants ... none).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import importlib.metadata as md
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import measure_memory  # noqa: E402  (hf_config, build, optimizer: the calibration rows' set-up and loop)

GIB = 2**30
VARIANTS = ("non_reentrant", "reentrant", "none")
REFERENCE = "non_reentrant"  # what ftlab does today: the others are compared against it
# a tiny llama-like architecture for --smoke (the shapes of the real one decide the GPU numbers)
SMOKE_ARCH = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True, max_position_embeddings=256)
# lighter means lighter by more than this (GiB): allocator rounding and the CUDA context vary a little
SAME_MEMORY_GIB = 0.05
ISSUE_REFERENCE = ("issue #21: the reentrant (peft default) variant of SmolLM2-1.7B 8-bit LoRA r=16, 4 x 512, "
                   "with checkpointing measured 4.9 GiB device memory on an H100 (not by this script)")


def versions() -> dict:
    """Installed versions, read from the metadata: importing bitsandbytes could start a CUDA context in the parent,
    and the parent must not hold one while the variants measure device memory."""
    out = {}
    for p in ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "deepspeed"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return out


# ---------------------------------------------------------------------------------------------------- the child

def _folder(st: dict) -> Path:
    return Path(st["ckpt"]) / st["arch"]  # where measure_memory.build looks for the saved bf16 weights


def prepare(st: dict) -> dict:
    """Save the random bf16 model once (measure_memory.build reloads it 8-bit); reuse one already there."""
    import torch
    folder = _folder(st)
    if (folder / "config.json").exists():
        return {"checkpoint": str(folder), "created": False}
    torch.manual_seed(st["seed"])
    if st["smoke"]:
        from transformers import AutoConfig, AutoModelForCausalLM
        cfg = AutoConfig.for_model("llama", **SMOKE_ARCH)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
    else:  # build's own bf16 path (from_config on the GPU); its 8-bit path would also load it quantised
        model = measure_memory.build({"arch": st["arch"], "method": "lora"}, Path(st["ckpt"]))
    model.save_pretrained(folder)
    return {"checkpoint": str(folder), "created": True, "seed": st["seed"]}


def load_base(st: dict):
    """The 8-bit base: measure_memory.build on the GPU; on the CPU (--smoke) the same reload, device_map cpu."""
    import torch
    if not st["smoke"]:
        return measure_memory.build({"arch": st["arch"], "method": "lora", "bits": 8}, Path(st["ckpt"]))
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    return AutoModelForCausalLM.from_pretrained(_folder(st), quantization_config=BitsAndBytesConfig(load_in_8bit=True),
                                                dtype=torch.bfloat16, device_map={"": "cpu"},
                                                attn_implementation="sdpa")


def apply(model, variant: str, st: dict):
    """Checkpointing as each path sets it, then LoRA (same initialisation in every variant)."""
    import peft
    import torch
    if variant == "non_reentrant":  # what ftlab's training ends up with (the trainer re-enables it so)
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                                     gradient_checkpointing_kwargs={"use_reentrant": False})
    elif variant == "reentrant":  # peft's default: no use_reentrant given, torch's checkpoint takes reentrant
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    else:
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    torch.manual_seed(st["seed"] + 1)
    r = st["r"]
    cfg = peft.LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    return peft.get_peft_model(model, cfg)


def checkpoint_kwargs(model):
    """The keyword arguments transformers binds to torch.utils.checkpoint.checkpoint on the decoder layers."""
    for m in model.modules():
        f = getattr(m, "_gradient_checkpointing_func", None)
        if f is not None and getattr(m, "gradient_checkpointing", False):
            return {k: v for k, v in getattr(f, "keywords", {}).items() if isinstance(v, (bool, int, float, str))}
    return None


def watch(model, seen: dict):
    """Hooks that record what actually ran: the grad_fn of the last decoder layer's output as the final norm sees
    it (CheckpointFunctionBackward when reentrant), and of the first 8-bit layer's output (bitsandbytes'
    autograd function: MatMul8bitLt on CUDA, MatMul8bitFp on a CPU) in the last decoder layer, whose input
    requires grad in every variant. A None among them: a forward without a graph (reentrant's first pass)."""
    import bitsandbytes as bnb
    base = model.get_base_model()
    norm = getattr(getattr(base, "model", None), "norm", None)
    if norm is not None:
        def pre(module, args):
            if args and hasattr(args[0], "grad_fn"):
                seen["last_layer_output_grad_fn"].add(type(args[0].grad_fn).__name__ if args[0].grad_fn else None)
        norm.register_forward_pre_hook(pre)
    int8 = [m for m in model.modules() if isinstance(m, bnb.nn.Linear8bitLt)]
    if int8:
        def post(module, args, out):
            seen["int8_layer_grad_fn"].add(type(out.grad_fn).__name__ if out.grad_fn is not None else None)
        int8[-1].register_forward_hook(post)
    seen["n_int8_layers"] = len(int8)


def fresh():
    import torch
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def run_variant(variant: str, st: dict, workdir: Path) -> dict:
    import torch
    cuda = torch.cuda.is_available() and not st["smoke"]
    dev = "cuda" if cuda else "cpu"
    if cuda:
        fresh()
    t0 = time.time()
    torch.manual_seed(st["seed"])
    model = load_base(st)
    if cuda:  # as measure_memory.measure: the load's transient peak is not the training's
        fresh()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = apply(model, variant, st)
        seen = {"last_layer_output_grad_fn": set(), "int8_layer_grad_fn": set()}
        watch(model, seen)
        if cuda:
            torch.cuda.synchronize()
        weights = torch.cuda.memory_allocated() if cuda else None
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        lora_init = float(sum(p.detach().double().sum().item() for _, p in named))
        vocab = model.get_base_model().config.vocab_size
        g = torch.Generator().manual_seed(st["seed"] + 2)
        ids = torch.randint(0, vocab, (st["batch"], st["seq"]), generator=g).to(dev)
        opt = measure_memory.optimizer([p for _, p in named], "adamw")  # fused AdamW, lr 1e-5, as the calibration
        model.train()
        losses, grads, step_s = [], {}, []
        for step in range(st["steps"]):
            t = time.time()
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            if cuda:
                torch.cuda.synchronize()
            step_s.append(time.time() - t)
            losses.append(loss.item())
            grads[step + 1] = {n: (p.grad.detach().to("cpu", copy=True) if p.grad is not None else None)
                               for n, p in named}
            opt.step()
            opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
    torch.save(grads, workdir / f"{variant}_grads.pt")
    row = {"variant": variant, "device": dev, "checkpoint_kwargs": checkpoint_kwargs(model),
           "last_layer_output_grad_fn": sorted(map(str, seen["last_layer_output_grad_fn"])),
           "int8_layer_grad_fn": sorted(map(str, seen["int8_layer_grad_fn"])), "n_int8_layers": seen["n_int8_layers"],
           "trainable": sum(p.numel() for _, p in named), "lora_tensors": len(named), "lora_init_sum": lora_init,
           "input_sum": int(ids.sum().item()), "losses": losses, "step_seconds": step_s,
           "checkpoint_warnings": sorted({str(w.message)[:160] for w in caught if "reentrant" in str(w.message)}),
           "seconds": time.time() - t0}
    if cuda:
        free, total = torch.cuda.mem_get_info()
        row.update(weights_gb=weights / GIB, peak_alloc_gb=torch.cuda.max_memory_allocated() / GIB,
                   peak_reserved_gb=torch.cuda.max_memory_reserved() / GIB, device_used_gb=(total - free) / GIB,
                   gpu=torch.cuda.get_device_name(0))
    else:
        row.update(weights_gb=None, peak_alloc_gb=None, peak_reserved_gb=None, device_used_gb=None, gpu="cpu",
                   peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB)
    return row


def child(args) -> None:
    st = json.loads(args.settings)
    try:
        row = prepare(st) if args.child == "prepare" else run_variant(args.child, st, Path(args.workdir))
    except Exception as e:  # an OOM or a library error ends this variant, not the comparison
        row = {"variant": args.child, "error": f"{type(e).__name__}: {str(e)[:400]}"}
    print("ROW " + json.dumps(row), flush=True)


# --------------------------------------------------------------------------------------------------- the parent

def spawn(what: str, st: dict, workdir: Path, timeout: int) -> dict:
    cmd = [sys.executable, __file__, "--child", what, "--settings", json.dumps(st), "--workdir", str(workdir),
           "--out", "-"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"variant": what, "error": f"timed out after {timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")]
    if lines:
        return json.loads(lines[-1][4:])
    return {"variant": what, "error": f"exit {proc.returncode}: {proc.stderr[-400:]}"}


def compare(ref: str, other: str, rows: dict, workdir: Path, rtol: float) -> dict:
    """The other variant's losses and LoRA gradients against ref's, step by step. Relative differences are taken
    against each tensor's scale (max |difference| / max |gradient| of that tensor); tensors zero in both (lora_A
    at step 1, where lora_B is still zero) are counted, not divided."""
    import torch
    a = torch.load(workdir / f"{ref}_grads.pt", map_location="cpu", weights_only=True)
    b = torch.load(workdir / f"{other}_grads.pt", map_location="cpu", weights_only=True)
    steps = []
    for step in sorted(a):
        ga, gb = a[step], b.get(step, {})
        max_abs = max_rel = 0.0
        zero = identical = missing = 0
        sq_diff = sq_ref = 0.0
        for name, x in ga.items():
            y = gb.get(name)
            if x is None or y is None or x.shape != y.shape:
                missing += 1
                continue
            x, y = x.double(), y.double()
            d = (x - y).abs().max().item()
            scale = max(x.abs().max().item(), y.abs().max().item())
            identical += int(torch.equal(x, y))
            sq_diff += (x - y).pow(2).sum().item()
            sq_ref += x.pow(2).sum().item()
            max_abs = max(max_abs, d)
            if scale == 0:
                zero += 1
            else:
                max_rel = max(max_rel, d / scale)
        steps.append({"step": step, "tensors": len(ga), "missing": missing, "bitwise_identical": identical,
                      "zero_in_both": zero, "max_abs_diff": max_abs, "max_rel_diff": max_rel,
                      "rel_l2_diff": (sq_diff ** 0.5 / sq_ref ** 0.5) if sq_ref else 0.0})
    la, lb = rows[ref]["losses"], rows[other]["losses"]
    loss_rel = [abs(x - y) / max(abs(x), 1e-12) for x, y in zip(la, lb)]
    grads_ok = all(s["missing"] == 0 and s["max_rel_diff"] <= rtol for s in steps) and bool(steps)
    losses_ok = len(la) == len(lb) and all(r <= rtol for r in loss_rel)
    return {"reference": ref, "variant": other, "steps": steps,
            "max_abs_diff": max((s["max_abs_diff"] for s in steps), default=None),
            "max_rel_diff": max((s["max_rel_diff"] for s in steps), default=None),
            "all_bitwise_identical": all(s["bitwise_identical"] == s["tensors"] for s in steps),
            "losses_ref": la, "losses_other": lb, "loss_rel_diff": loss_rel, "losses_identical": la == lb,
            "same_lora_init": rows[ref]["lora_init_sum"] == rows[other]["lora_init_sum"],
            "same_input": rows[ref]["input_sum"] == rows[other]["input_sum"],
            "grads_within_rtol": grads_ok, "losses_within_rtol": losses_ok, "rtol": rtol}


def ftlab_estimate(st: dict) -> dict:
    from ftlab.memory import estimate_memory
    e_st = st["estimate_for"]  # the GPU set-up (--arch, --batch, --seq), also in --smoke
    preset = measure_memory.ARCH_PRESET[e_st["arch"]]
    out = {"model": preset, "call": (f"estimate_memory({preset!r}, method='lora', bits=8, lora_r={st['r']}, "
                                     f"lora_targets='all-linear', batch_size={e_st['batch']}, seq_len={e_st['seq']}, "
                                     "gradient_checkpointing=True, trainer=...)")}
    for trainer in ("plain", "trl"):  # plain: this script's loop; trl: what ftlab's own runs use
        e = estimate_memory(preset, method="lora", bits=8, lora_r=st["r"], lora_targets="all-linear",
                            batch_size=e_st["batch"], seq_len=e_st["seq"], gradient_checkpointing=True,
                            trainer=trainer)
        out[trainer] = {"total_gib": e.total_gib, "peak_allocated_gib": e.peak_allocated_gib,
                        "components": {k: round(v, 4) for k, v in e.components.items()}}
    return out


def verdict(rows: dict, comparisons: list, estimate: dict | None, smoke: bool) -> dict:
    """The verdict, from the numbers only."""
    ref, alt = rows.get(REFERENCE, {}), rows.get("reentrant", {})
    failed = [v for v, r in rows.items() if "error" in r]
    if "error" in ref or "error" in alt or not ref or not alt:
        return {"verdict": f"incomplete: {', '.join(failed) or 'a variant'} did not run", "failed": failed}
    cmp = next((c for c in comparisons if c["reference"] == REFERENCE and c["variant"] == "reentrant"), None)
    if cmp is None:
        return {"verdict": "incomplete: the gradients of the two variants could not be compared", "failed": failed}
    same_setup = cmp["same_lora_init"] and cmp["same_input"]
    correct = same_setup and cmp["grads_within_rtol"] and cmp["losses_within_rtol"]
    losses = ("identical" if cmp["losses_identical"] else "within rtol" if cmp["losses_within_rtol"] else
              f"different (relative {[f'{x:.1e}' for x in cmp['loss_rel_diff']]})")
    if not same_setup:
        how = "the variants did not start alike (LoRA initialisation or input batch differ): no comparison"
    elif cmp["all_bitwise_identical"] and cmp["losses_identical"]:
        how = "bitwise identical gradients and losses"
    else:
        how = (f"gradients {'within' if cmp['grads_within_rtol'] else 'beyond'} rtol {cmp['rtol']:g} (max relative "
               f"difference {cmp['max_rel_diff']:.2e}, max absolute {cmp['max_abs_diff']:.2e}), losses {losses}")
    others = [c for c in comparisons if c["variant"] == "none" or c["reference"] == "none"]
    out = {"reentrant_matches_non_reentrant": correct, "how": how}
    if others:
        out["against_no_checkpointing"] = {f"{c['variant']} vs {c['reference']}": c["max_rel_diff"] for c in others}
    if smoke or ref.get("peak_alloc_gb") is None:
        rss = {v: round(r["peak_rss_gb"], 3) for v, r in rows.items() if r.get("peak_rss_gb") is not None}
        out["verdict"] = (f"memory not measured (CPU smoke, peak RSS {rss} GiB is not the GPU's); on this CPU "
                          f"reentrant {'matches' if correct else 'does NOT match'} non-reentrant: {how}")
        return out
    d_peak = ref["peak_alloc_gb"] - alt["peak_alloc_gb"]
    d_used = ref["device_used_gb"] - alt["device_used_gb"]
    lighter = "reentrant" if d_peak > SAME_MEMORY_GIB else REFERENCE if d_peak < -SAME_MEMORY_GIB else None
    out.update(reentrant_lighter_by_peak_alloc_gib=d_peak, reentrant_lighter_by_device_used_gib=d_used,
               lighter=lighter)
    if lighter == "reentrant":
        head = "reentrant is lighter and correct" if correct else "reentrant is lighter but NOT correct"
    elif lighter == REFERENCE:
        head = "non-reentrant is lighter" + ("" if correct else " (and reentrant's gradients differ)")
    else:
        head = f"same memory within {SAME_MEMORY_GIB} GiB" + ("" if correct else " (and reentrant's gradients differ)")
    out["verdict"] = (f"{head}: peak allocated {ref['peak_alloc_gb']:.2f} (non-reentrant) vs "
                      f"{alt['peak_alloc_gb']:.2f} GiB (reentrant), device in use {ref['device_used_gb']:.2f} vs "
                      f"{alt['device_used_gb']:.2f} GiB; {how}")
    if estimate and "plain" in estimate:
        est = estimate["plain"]["total_gib"]
        errs = {v: est - rows[v]["device_used_gb"] for v in (REFERENCE, "reentrant")}
        near = min(errs, key=lambda v: abs(errs[v]))
        out["estimate_minus_device_used_gib"] = errs
        out["estimate_follows"] = near
        other = next(v for v in errs if v != near)
        out["estimate_sentence"] = (f"ftlab's estimate {est:.2f} GiB (plain loop) is {errs[near]:+.2f} GiB from the "
                                    f"{near} variant's device in use, {errs[other]:+.2f} GiB from the {other} one's")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--arch", default="smollm2-1.7b", help="a name of ftlab.calibration.ARCH")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rtol", type=float, default=1e-3,
                    help="largest relative difference (of a gradient tensor's scale, of a loss) still called equal")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=None,
                    help="default: non_reentrant reentrant (with --smoke also none)")
    ap.add_argument("--ckpt", default="/tmp/ftlab-ckpt",
                    help="where the random bf16 weights are saved (measure_memory.py's folder: reused if there)")
    ap.add_argument("--keep", default="", help="keep the gradient files in this folder (default: a temp dir)")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per variant process")
    ap.add_argument("--smoke", action="store_true", help="CPU: a tiny llama-like model (2 layers, hidden 64), 2 x 32")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--settings", default="", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if args.arch not in measure_memory.ARCH_PRESET:
        ap.error(f"--arch: one of {sorted(measure_memory.ARCH_PRESET)}")
    variants = args.variants or (list(VARIANTS) if args.smoke else [REFERENCE, "reentrant"])
    tmp = tempfile.TemporaryDirectory(prefix="kbit-ckpt-")
    workdir = Path(args.keep or tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    st = {"arch": "tiny-llama-smoke" if args.smoke else args.arch,
          "estimate_for": {"arch": args.arch, "batch": args.batch, "seq": args.seq},
          "batch": 2 if args.smoke else args.batch, "seq": 32 if args.smoke else args.seq,
          "steps": args.steps, "r": args.r, "seed": args.seed, "smoke": args.smoke,
          "ckpt": str(workdir / "ckpt") if args.smoke else args.ckpt, "lora_alpha": 2 * args.r, "lora_dropout": 0.0,
          "lora_targets": "all-linear", "optimizer": "torch AdamW fused, lr 1e-5 (measure_memory.optimizer)",
          "variants": variants, "rtol": args.rtol}
    if args.smoke:
        st["smoke_arch"] = SMOKE_ARCH
    t0 = time.time()
    prep = spawn("prepare", st, workdir, args.timeout)  # its own process: the parent holds no CUDA context
    rows = {}
    for v in variants:
        rows[v] = (spawn(v, st, workdir, args.timeout) if "error" not in prep else
                   {"variant": v, "error": f"no weights: {prep['error'][:200]}"})
        r = rows[v]
        gib = {k: (round(r[k], 3) if r.get(k) is not None else None)
               for k in ("peak_alloc_gb", "device_used_gb", "peak_rss_gb")}
        print(f"{v}: " + (r["error"] if "error" in r else
                          f"losses {[round(x, 6) for x in r['losses']]}, GiB {gib}, checkpoint "
                          f"{r['checkpoint_kwargs']}, last layer output {r['last_layer_output_grad_fn']}, int8 layer "
                          f"{r['int8_layer_grad_fn']}, {r['seconds']:.1f} s"), flush=True)
    ok = [v for v in variants if "error" not in rows[v]]
    pairs = [(a, b) for i, a in enumerate(ok) for b in ok[i + 1:]]
    comparisons = []
    for a, b in pairs:
        try:
            comparisons.append(compare(a, b, rows, workdir, args.rtol))
        except Exception as e:
            comparisons.append({"reference": a, "variant": b, "error": f"{type(e).__name__}: {e}"})
    comparisons = [c for c in comparisons if "error" not in c] + [c for c in comparisons if "error" in c]
    try:
        estimate = ftlab_estimate(st)
    except Exception as e:
        estimate = {"error": f"{type(e).__name__}: {e}"}
    good = [c for c in comparisons if "error" not in c]
    v = verdict(rows, good, None if "error" in estimate else estimate, args.smoke)
    gpus = {r.get("gpu") for r in rows.values() if r.get("gpu")}
    result = {"what": ("Peak memory, losses and LoRA gradients of an 8-bit LoRA training step with reentrant "
                       "(peft's default) against non-reentrant (ftlab's) activation checkpointing, same set-up"),
              "gpu": "cpu" if args.smoke else (gpus.pop() if len(gpus) == 1 else sorted(gpus) or None),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "versions": versions(), "settings": st, "smoke": args.smoke, "prepare": prep, "variants": rows,
              "comparisons": comparisons, "ftlab_estimate": estimate, "reference_measurement": ISSUE_REFERENCE,
              **v, "seconds": time.time() - t0}
    if args.smoke:
        result["note"] = ("CPU smoke: bitsandbytes trains 8-bit layers on a CPU through MatMul8bitFp (dequantise + "
                          "F.linear), not the GPU's MatMul8bitLt int8 kernel, and the estimate is the GPU set-up's "
                          "(--arch), not the tiny model's; gradients and losses are still compared")
    text = json.dumps(result, indent=1, default=str)
    if args.out != "-":
        Path(args.out).write_text(text)
    for c in comparisons:
        print(f"{c['variant']} vs {c['reference']}: " + (
            c["error"] if "error" in c else
            f"max abs diff {c['max_abs_diff']:.3e}, max rel diff {c['max_rel_diff']:.3e}, bitwise identical "
            f"{c['all_bitwise_identical']}, losses identical {c['losses_identical']}, same init "
            f"{c['same_lora_init']}, same input {c['same_input']}"))
    if "error" not in estimate:
        e = estimate["plain"]
        print(f"ftlab estimate: {e['total_gib']:.2f} GiB in use, {e['peak_allocated_gib']:.2f} GiB peak allocated "
              f"(plain loop); {estimate['trl']['total_gib']:.2f} GiB with trainer='trl'")
    else:
        print("ftlab estimate:", estimate["error"])
    print("verdict:", result["verdict"])
    if v.get("estimate_sentence"):
        print(v["estimate_sentence"])
    print(f"{time.time() - t0:.0f} s; written to {args.out}")
    tmp.cleanup()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
