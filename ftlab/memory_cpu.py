"""The CPU as a device of the calculator: the peak resident set size (RSS) of a process that trains as ftlab does.

estimate_memory(..., device="cpu") lands here. What ftlab runs on a CPU (ftlab.trainer.trainer_args: no bf16 or
fp16 there; ftlab.models.load_model: dtype fp32 on a CPU whatever `bits` says for 16/32, 4/8-bit bases through
bitsandbytes with an fp32 compute dtype) is an fp32 run without autocast, so each term is the GPU calculator's
term (ftlab.memory, ftlab.shapes) at 4 bytes, plus what a process holds that a GPU's allocator never sees:

    baseline      the interpreter with torch, transformers, trl, peft, ftlab and the notebook's libraries
                  (ipykernel, ipywidgets, plotly, pandas, ftlab.widgets), measured: CPU.baseline_gib
    weights       fp32: 4 bytes a parameter (the embedded checkpoints are fp32 safetensors, which transformers maps:
                  the pages count once the first forward touches them). 4/8-bit bases: bitsandbytes' storage as on
                  a GPU (ftlab.memory.weights_bytes; the rest fp32 after prepare_model_for_kbit_training)
    checkpoint    4/8-bit bases only: the fp32 checkpoint read to quantise it stays mapped and resident
                  (measured: after the load RSS rose by the file's size plus the quantised weights)
    adapters, gradients, optimizer
                  ftlab.memory's static terms (the same trainable count; AdamW's two fp32 moments)
    activations   ftlab.memory's phases of a step with an fp32 stream and no autocast (Setup.stream on a CPU),
                  the peak phase's activations, times CPU.activations: eager fp32 on a CPU keeps more than that
                  formula's GPU kernels (RMSNorm's fp32 intermediates, sdpa's math path with its scores), and
                  glibc's heap keeps freed blocks below its mmap threshold for reuse; fitted, not traced.
                  Per-block tensors that do not grow with tokens (LoHa's weight deltas) are not scaled
    working_set   what any training step holds whatever it saves (the trainer's batch, the autograd engine's and
                  the kernels' buffers): CPU.working_gib, fitted (top_k, which saves almost nothing, shows it)
    logits        TRL's fused LM head in fp32: a tile of tokens × vocabulary entries, its log-softmax and its
                  gradient (three tiles), and the fp32 gradient of the hidden states
    optimizer_step  the step's phase: the gradients and one fp32 temporary a trainable parameter (torch's
                  foreach AdamW makes the scaled gradients, then sqrt of the second moment, one at a time); for a
                  full fine-tune this phase, not the loss, is the peak
    good_weights  ftlab.guard.GoodWeights keeps two copies of the trainable weights in host RAM (4 bytes a
                  parameter each, up to its max_params), written from the second step on

total_gib is the peak RSS; peak_allocated_gib the run's own part (total less the baseline), which is what
ftlab.measure.MemoryMonitor.report()'s peak_rss_over_baseline_gib measures; fits compares the total with this
machine's RAM (psutil's virtual_memory().total).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import psutil

from ftlab.gpus import Fit
from ftlab.memory_calibration import CALIBRATION as K

GIB = 2**30
GOOD_WEIGHTS_MAX_PARAMS = 200_000_000  # ftlab.guard.GoodWeights' default max_params (imported there with torch)


@dataclass(frozen=True)
class CpuCalibration:
    # A Jupyter kernel (ipykernel 7.4) that imported the quickstart's libraries (ftlab.widgets, ipywidgets, plotly),
    # pandas and ftlab's training stack (torch 2.13, transformers 5.23, trl 1.16, peft 0.21): RSS measured by
    # scripts/measure_cpu_memory.py (its "baseline" entry, ftlab/measured/cpu_*.json); a constant, not fitted
    baseline_gib: float = 0.580
    # what a CPU step's activations take against ftlab.memory's formula at fp32, and a working set every training
    # step holds whatever it saves (see the module doc): a two-point fit on the fresh-kernel rows "quickstart"
    # (largest activations) and "top_k" (smallest) of ftlab/measured/cpu_amd-epyc-2core_2026-12-02.json; every
    # other row of that file only tests them (tests/test_memory_cpu.py)
    activations: float = 1.85
    working_gib: float = 0.33
    # TRL's fused LM head on a CPU: logits, log-softmax and gradient tiles alive at once
    logit_tiles: int = 3
    # torch.optim.AdamW (foreach, as transformers' adamw_torch runs it on a CPU): fp32 temporaries a trainable
    # parameter alive at once in its step (read from torch 2.13's _multi_tensor_adam: scaled grads, then sqrt)
    step_temporaries: int = 1


CPU = CpuCalibration()


def cpu_weights(s, M) -> tuple[float, float]:
    """(weights, checkpoint) in bytes: what load_for really holds on a CPU (see the module doc); M: ftlab.memory."""
    if s.bits in (8, 4):
        return M.weights_bytes(s.arch, s.bits, s.kbit), 4.0 * s.arch.n_params
    return 4.0 * s.arch.n_params, 0.0


def cpu_logits(s) -> float:
    """TRL's fused head in fp32 (three tiles: logits, log-softmax, gradient) and the hidden states' gradient."""
    a, T = s.arch, s.tokens
    if s.trainer == "plain":  # fp32 logits, log_softmax output and its gradient, all (T × vocab)
        return 3 * 4.0 * T * a.vocab
    return CPU.logit_tiles * 4.0 * min(T, K.trl_tile_tokens) * min(a.vocab, K.trl_tile_vocab) + 4.0 * T * a.hidden


def estimate_cpu(s, M):
    """The peak RSS of a CPU training (or inference) run of set-up `s` (an ftlab.memory_setup.Setup with
    device="cpu"), part by part: an ftlab.memory.MemoryEstimate. M: the ftlab.memory module, whose phases and
    result type this reuses (handed over, so that neither module imports the other at import time)."""
    n = s.trainable_params
    weights, checkpoint = cpu_weights(s, M)
    separate = s.train and not s.method.trains_base          # peft's adapters are fp32, and so is all else here
    state = M.OPTIMIZER_STATE_BYTES[s.optimizer]
    c = {"baseline": CPU.baseline_gib * GIB, "weights": weights, "checkpoint": checkpoint,
         "adapters": 4.0 * n if separate else 0.0, "gradients": 4.0 * n if s.train else 0.0,
         "optimizer": (8.0 if state is None else state) * n if s.train else 0.0}
    if s.train:
        c["good_weights"] = 2 * 4.0 * n if n <= GOOD_WEIGHTS_MAX_PARAMS else 0.0
        # an 8-bit base on a CPU saves what a 4-bit one saves: the GPU's int8 inputs kept through the step
        # (ftlab.memory._int8_kept) did not show in the lora_8bit row
        phases = M._training_phases(replace(s, bits=4) if s.bits == 8 else s, c)
        # per-block tensors that do not grow with tokens (LoHa's weight deltas) are taken as they are
        fixed = s.method.saved_per_block(s.arch, s, s.stream) * s.arch.layers if s.method.saved_per_block else 0.0
        for p in phases.values():
            if "activations" in p:
                p["activations"] = min(fixed, p["activations"]) + CPU.activations * max(p["activations"] - fixed, 0)
        phases["loss"]["logits"] = cpu_logits(s)
        temporaries = CPU.step_temporaries * 4.0 * n if s.optimizer == "adamw" else 0.0
        phases["step"] = {"gradients": 4.0 * n, "optimizer_step": temporaries}
        peak = max(phases, key=lambda k: sum(phases[k].values()))
        dynamic = {k: phases[peak].get(k, 0.0) for k in ("activations", "logits", "gradients", "optimizer_step")}
        dynamic["working_set"] = CPU.working_gib * GIB
    else:
        dynamic = {"activations": M._inference_phases(s)["forward"]["activations"] * 2,  # fp32, not bf16
                   "logits": 4.0 * s.tokens * s.arch.vocab, "gradients": 0.0}
    c.update(dynamic)
    comps = {k: v / GIB for k, v in c.items()}
    total = sum(comps.values())
    ram = psutil.virtual_memory().total / GIB
    fit = Fit("this machine's RAM (psutil's total)", total <= ram, ram, ram - total)
    return M.MemoryEstimate(total_gib=total, peak_allocated_gib=total - comps["baseline"], components=comps,
                            fits=fit, trainable_params=n,
                            details={"tokens_per_step": s.tokens, "arch": s.arch, "layout": s.layout, "device": "cpu"})
