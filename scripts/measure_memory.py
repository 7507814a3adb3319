"""Measure the GPU memory of fine-tuning set-ups, the way shared/calibration/README.md describes.

Each set-up builds a model from the published config of a real checkpoint (random weights, no hub),
directly on the GPU (4/8-bit bases: saved once, then reloaded through bitsandbytes), applies the
method, and runs 3 steps of forward / backward / optimizer step / zero_grad (or 3 no-grad forwards
for inference; or 3 steps of TRL's SFTTrainer with `trl: true`). It writes one JSON line per set-up:
  weights_gb        allocated after the model and adapters were built
  peak_alloc_gb     torch.cuda.max_memory_allocated() over the row, minus what was allocated before it
  peak_reserved_gb  torch.cuda.max_memory_reserved()
  device_used_gb    total - free from torch.cuda.mem_get_info() at the end (what nvidia-smi shows)
All in GiB. Usage (on a CUDA machine):
    python scripts/measure_memory.py --out data.jsonl [--only SUBSTRING ...] [--list]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ftlab.calibration import ARCH  # noqa: E402
from ftlab.models import PRESETS  # noqa: E402

GIB = 2**30
ARCH_PRESET = ARCH  # measured architecture name -> preset


def S(arch, method, batch=4, seq=512, **kw):
    row = {"arch": arch, "method": method, "batch": batch, "seq": seq}
    if method in ("qlora", "qdora"):
        row["bits"] = 4
    elif "dtype" not in kw and "bits" not in kw:
        row["dtype"] = "bf16"
    if method in ("lora", "qlora", "dora", "qdora") and "r" not in kw:
        row["r"] = 16
    row.update(kw)
    return row


# Mechanisms, not rows to fit: other sizes and shapes, every method, bases at 4/8 bits, optimizers,
# TRL's fused-loss path, checkpointing, long contexts.
SETUPS = [
    S("smollm2-135m", "infer", batch=1),
    S("smollm2-135m", "full", dtype="fp32", autocast=True),
    S("smollm2-135m", "lora"),
    S("smollm2-135m", "lora", trl=True),
    S("smollm2-135m", "qlora", gc=True),
    S("smollm2-1.7b", "lora"),
    S("smollm2-1.7b", "full"),
    S("smollm2-1.7b", "dora"),
    S("smollm2-1.7b", "ia3"),
    S("smollm2-1.7b", "prefix"),
    S("smollm2-1.7b", "lora", gc=True, trl=True, batch=8),
    S("qwen2.5-1.5b", "lora", gc=True, seq=1024),
    S("qwen2.5-1.5b", "lora", trl=True),
    S("qwen2.5-1.5b", "qlora"),
    S("qwen2.5-1.5b", "lora", bits=8, gc=True, r=16),
    S("qwen2.5-1.5b", "full", batch=2, optimizer="adamw_8bit"),
    S("qwen2.5-1.5b", "full", batch=2, optimizer="paged_adamw_8bit"),
    S("qwen2.5-1.5b", "full", batch=2, optimizer="sgd"),
    S("qwen2.5-1.5b", "qdora", gc=True),
    S("llama-3.2-3b", "lora", batch=2, seq=1024),
    S("llama-3.2-3b", "qlora", gc=True),
    S("llama-3.2-3b", "lora", gc=True, trl=True, seq=1024),
    S("llama-3.2-3b", "ia3", gc=True),
    S("qwen2.5-0.5b", "qlora", gc=True, batch=1, seq=4096),
    S("qwen2.5-0.5b", "qlora", gc=True, batch=1, seq=8192),
    S("qwen2.5-0.5b", "lora", gc=True, batch=1, seq=8192),
    S("qwen2.5-0.5b", "qlora", gc=True, trl=True, batch=1, seq=8192),
    S("llama-3.1-8b", "lora", gc=True, batch=1, seq=8192),
    S("llama-3.1-8b", "qlora", gc=True),
    S("llama-3.1-8b", "qlora", gc=True, batch=1, seq=8192),
    S("llama-3.1-8b", "qlora", gc=True, trl=True, batch=2, seq=2048),
    S("llama-3.1-8b", "qlora", gc=True, optimizer="paged_adamw_8bit"),
    S("mistral-7b", "qlora", gc=True, batch=2, seq=1024),
    S("mistral-7b", "infer", batch=1, seq=2048),
    S("qwen2.5-1.5b", "lora", bits=8, r=16),
    S("qwen2.5-1.5b", "lora", bits=8, gc=True, trl=True, r=16),
    S("llama-3.2-1b", "lora", bits=8, gc=True, r=16),
    S("llama-3.2-1b", "lora", bits=8, gc=True, r=16, batch=1),
]

# The calculator's three corners furthest from what it was fitted on (issue #21, check 4), only to test it:
# a 262k-token vocabulary with LoRA and no checkpointing in a hand-written loop, full fine-tuning of a 3B
# model with paged 8-bit AdamW and checkpointing, 8-bit bases with LoRA and checkpointing. Run with
# `--only corner`; none of these rows chose a constant.
CORNERS = [
    S("gemma-3-270m", "lora", corner="large vocabulary"),
    S("gemma-3-270m", "lora", batch=8, corner="large vocabulary"),
    S("gemma-3-270m", "lora", batch=2, seq=1024, corner="large vocabulary"),
    S("smollm2-1.7b", "lora", bits=8, gc=True, r=16, corner="8-bit + checkpointing"),
    S("smollm2-1.7b", "lora", bits=8, gc=True, r=16, batch=2, seq=1024, corner="8-bit + checkpointing"),
    S("llama-3.2-3b", "full", batch=2, gc=True, optimizer="paged_adamw_8bit", corner="3B full, paged 8-bit AdamW"),
    S("llama-3.2-3b", "full", batch=4, seq=1024, gc=True, optimizer="paged_adamw_8bit",
      corner="3B full, paged 8-bit AdamW"),
]
SETUPS += CORNERS


def hf_config(arch: str):
    from transformers import AutoConfig
    a = PRESETS[ARCH_PRESET[arch]].arch
    model_type = next((t for prefix, t in (("qwen", "qwen2"), ("mistral", "mistral"), ("gemma", "gemma3_text"))
                       if arch.startswith(prefix)), "llama")
    kw = dict(hidden_size=a.hidden, intermediate_size=a.intermediate, num_hidden_layers=a.layers,
              num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, vocab_size=a.vocab,
              tie_word_embeddings=a.tied_embeddings, max_position_embeddings=max(a.max_positions, 16384))
    if a.head_dim:
        kw["head_dim"] = a.head_dim
    return AutoConfig.for_model(model_type, **kw)


def build(setup, ckpt_root: Path):
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    cfg = hf_config(setup["arch"])
    bits = setup.get("bits")
    if bits in (4, 8):
        folder = ckpt_root / setup["arch"]
        if not (folder / "config.json").exists():  # random bf16 weights saved once, reloaded quantised
            with torch.device("cuda"):
                m = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
            m.save_pretrained(folder)
            del m
            gc.collect(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
        q = (BitsAndBytesConfig(load_in_8bit=True) if bits == 8 else
             BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.bfloat16))
        return AutoModelForCausalLM.from_pretrained(folder, quantization_config=q, dtype=torch.bfloat16,
                                                    device_map={"": 0}, attn_implementation="sdpa")
    dtype = torch.float32 if setup.get("dtype") == "fp32" else torch.bfloat16
    with torch.device("cuda"):
        return AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa")


def apply(model, setup):
    import peft
    m, gc_on = setup["method"], bool(setup.get("gc"))
    if setup.get("bits") in (4, 8):
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=gc_on,
                                                     gradient_checkpointing_kwargs={"use_reentrant": False})
    elif gc_on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    r = setup.get("r", 16)
    if m in ("lora", "qlora", "dora", "qdora"):
        cfg = peft.LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=setup.get("targets", "all-linear"),
                              use_dora=m in ("dora", "qdora"), task_type="CAUSAL_LM")
    elif m == "ia3":
        cfg = peft.IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"],
                             task_type="CAUSAL_LM")
    elif m == "prompt":
        cfg = peft.PromptTuningConfig(num_virtual_tokens=20, task_type="CAUSAL_LM")
    elif m == "prefix":
        cfg = peft.PrefixTuningConfig(num_virtual_tokens=20, task_type="CAUSAL_LM")
    else:
        return model
    return peft.get_peft_model(model, cfg)


def optimizer(params, name):
    import torch
    if name == "adamw_8bit":
        import bitsandbytes as bnb
        return bnb.optim.AdamW8bit(params, lr=1e-5)
    if name == "paged_adamw_8bit":
        import bitsandbytes as bnb
        return bnb.optim.PagedAdamW8bit(params, lr=1e-5)
    if name == "sgd":
        return torch.optim.SGD(params, lr=1e-5)  # as transformers' optim="sgd": no momentum, no state
    return torch.optim.AdamW(params, lr=1e-5, fused=True)


def run_plain(model, setup, vocab):
    import torch
    b, s = setup["batch"], setup["seq"]
    ids = torch.randint(0, vocab, (b, s), device="cuda")
    if setup["method"] == "infer":
        with torch.no_grad():
            for _ in range(3):
                model(input_ids=ids)
        return
    opt = optimizer([p for p in model.parameters() if p.requires_grad], setup.get("optimizer", "adamw"))
    model.train()
    for _ in range(3):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bool(setup.get("autocast"))):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def run_trl(model, setup, vocab, tokenizer_dir):
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer
    b, s = setup["batch"], setup["seq"]
    rows = [{"input_ids": torch.randint(0, vocab, (s,)).tolist()} for _ in range(3 * b)]
    args = SFTConfig(output_dir="/tmp/trl-out", max_steps=3, per_device_train_batch_size=b, bf16=True,
                     max_length=s, packing=False, optim="adamw_torch_fused", report_to="none", save_strategy="no",
                     gradient_checkpointing=bool(setup.get("gc")), logging_steps=1, disable_tqdm=True,
                     gradient_checkpointing_kwargs={"use_reentrant": False}, dataloader_num_workers=0)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok).train()


def measure(setup, ckpt_root, tokenizer_dir):
    import torch
    gc.collect(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    model = build(setup, ckpt_root)
    gc.collect(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    base = 0  # nothing else stays allocated between rows
    model = apply(model, setup)
    torch.cuda.synchronize()
    weights = torch.cuda.memory_allocated() - base
    n_params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad) if setup["method"] != "infer" else n_params
    vocab = model.config.vocab_size if hasattr(model.config, "vocab_size") else model.get_base_model().config.vocab_size
    if setup.get("trl"):
        run_trl(model, setup, vocab, tokenizer_dir)
    else:
        run_plain(model, setup, vocab)
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    row = {**setup, "n_params": n_params, "trainable": trainable, "weights_gb": weights / GIB,
           "peak_alloc_gb": (torch.cuda.max_memory_allocated() - base) / GIB,
           "peak_reserved_gb": torch.cuda.max_memory_reserved() / GIB, "device_used_gb": (total - free) / GIB,
           "seconds": time.time() - t0}
    del model
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", nargs="*", default=None, help="keep set-ups whose JSON contains one of these")
    ap.add_argument("--start", type=int, default=0, help="skip the first N set-ups")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--row", default="", help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", default="/tmp/ftlab-ckpt")
    ap.add_argument("--tokenizer", default=os.environ.get("FTLAB_TOKENIZER", ""),
                    help="any tokenizer folder, for the TRL rows (ids are random anyway)")
    args = ap.parse_args()
    setups = [s for s in SETUPS[args.start:] if not args.only or any(o in json.dumps(s) for o in args.only)]
    if args.list:
        print("\n".join(json.dumps(s) for s in setups))
        return
    if args.row:  # one set-up, in this fresh process; the parent reads the last line
        import torch
        import transformers
        meta = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                "transformers": transformers.__version__}
        s = json.loads(args.row)
        try:
            row = {**measure(s, Path(args.ckpt), args.tokenizer), **meta}
        except Exception as e:  # an OOM or a library error ends this row, not the sweep
            row = {**s, "error": f"{type(e).__name__}: {str(e)[:300]}", **meta}
        print("ROW " + json.dumps(row), flush=True)
        return
    # Each set-up runs in its own process: the CUDA context, loaded kernels and memory that a library
    # keeps (bitsandbytes' paged optimizer states) must not leak into the next row's device_used.
    with open(args.out, "a") as f:
        for s in setups:
            proc = subprocess.run([sys.executable, __file__, "--out", args.out, "--ckpt", args.ckpt, "--tokenizer",
                                   args.tokenizer, "--row", json.dumps(s)], capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")]
            row = json.loads(lines[-1][4:]) if lines else {**s, "error": proc.stderr[-300:]}
            f.write(json.dumps(row) + "\n"); f.flush()
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                              if k not in ("gpu", "torch", "transformers")}), flush=True)

if __name__ == "__main__":
    main()
