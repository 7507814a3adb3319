"""Measure the peak resident memory (RSS) of CPU training set-ups, beside ftlab's CPU estimate.

Each set-up runs in a fresh Jupyter kernel (jupyter_client, this interpreter), as a lab runs: the kernel imports
what the quickstart imports (ftlab.widgets, so ipywidgets and plotly) and pandas, then ftlab.runs.run_and_measure
trains the set-up (MemoryMonitor started before the model loads, the validation pass before training, a few
steps) and the row is the process's peak RSS next to estimate_memory(cfg, device="cpu"). A first kernel measures
the baseline: the same imports plus ftlab's training stack (trl, peft), nothing loaded. The estimate of a row is
made at the longest training example's length (TRL pads a batch to its longest; ftlab.runs does the same).

Set-ups: "quickstart" (labs/00_quickstart.ipynb with labs/params/ci.yaml: smollm2-135m-instruct, LoRA r=8,
email_subject, 4 × 128 tokens) and lab 07's methods with its CI parameters (definitions, r=8, 20 virtual
tokens, adapter 32): full, lora, ia3, prompt_tuning, bitfit (SmolLM2 has no biases: recorded as skipped), qlora
(4-bit base), lora_8bit (8-bit base) and top_k (the smallest activations). Four steps each: the peak comes from the second step on (AdamW's
moments exist, ftlab.guard.GoodWeights holds both copies).

Which rows chose ftlab.memory_cpu's constants: the "baseline" entry gives CPU.baseline_gib; the rows "quickstart"
and "top_k" chose CPU.activations and CPU.working_gib; every other row only tests the estimate
(tests/test_memory_cpu.py).

Usage: HF_HUB_OFFLINE=1 python scripts/measure_cpu_memory.py [--steps 4] [--only quickstart,full] [--out FILE] [--add]
Writes ftlab/measured/cpu_<machine>_<date>.json (or FILE); --add measures only the set-ups that FILE lacks (or
--only's) and adds their rows to it, keeping its baseline.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sys
from pathlib import Path

import jupyter_client
import psutil

ROOT = Path(__file__).resolve().parent.parent
GIB = 2**30
QUICKSTART = dict(model="smollm2-135m-instruct", method="lora", lora_r=8, lora_alpha=16.0, bits=16,
                  dataset="email_subject", batch_size=4, seq_len=128, learning_rate=5e-4)
LAB07 = dict(model="smollm2-135m-instruct", dataset="definitions", batch_size=4, seq_len=128, lora_r=8,
             num_virtual_tokens=20, adapter_size=32, top_k_layers=2)
SETUPS = {"quickstart": ("quickstart", QUICKSTART), **{m: (m, LAB07) for m in
          ("full", "lora", "ia3", "prompt_tuning", "bitfit", "qlora", "lora_8bit", "top_k")}}
IMPORTS = ("from ftlab.widgets import ConfigPanel, LossPlot, TrainingProgress, setup_notebook\n"
           "setup_notebook()\nimport pandas as pd\nimport json, psutil\n")
RUN = """
from dataclasses import replace
from ftlab.compare import variant
from ftlab.config import TrainConfig
from ftlab.data import sft_data
from ftlab.errors import ConfigError
from ftlab.memory import estimate_memory
from ftlab.memory_setup import setup_arguments
from ftlab.methods import check_setup
from ftlab.models import load_tokenizer
from ftlab.runs import longest_tokens, run_and_measure
cfg = TrainConfig(**{fields!r}, max_steps={steps}, output_dir={out!r})
c = cfg if {name!r} == "quickstart" else variant({name!r}, cfg)
try:
    check_setup(c)
except ConfigError as e:
    print("ROW" + json.dumps({{"skipped": str(e)}}))
else:
    tok = load_tokenizer(c.model)
    train, val = sft_data(c, tok, n_validation=4)
    row = run_and_measure(c, train, val, details=True, label={name!r})
    longest = longest_tokens(tok, train, c.seq_len)  # the estimate's seq_len: the longest step's (as ftlab.runs)
    est = estimate_memory(replace(c, seq_len=longest), device="cpu")
    m = row["memory"]
    args = {{k: v for k, v in setup_arguments(c).items() if k != "gpu"}}
    args["seq_len"] = longest
    print("ROW" + json.dumps({{"model": c.model, "arguments": args, "method": c.method, "bits": c.effective_bits, "trainable": row["trainable"],
        "peak_rss_gib": m["peak_rss_gib"], "rss_before_gib": m["peak_rss_gib"] - m["peak_rss_over_baseline_gib"],
        "estimate_gib": est.total_gib, "estimate_components_gib": est.components}}))
"""


def kernel_run(code: str, timeout: int = 1800) -> str:
    """Run `code` in a fresh kernel of this interpreter; its printed output."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    km, kc = jupyter_client.manager.start_new_kernel(kernel_name="python3", cwd=str(ROOT / "labs"), env=env)
    out, errors = [], []

    def hook(msg):
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            errors.append(f"{msg['content']['ename']}: {msg['content']['evalue']}")
    try:
        kc.execute_interactive(code, output_hook=hook, timeout=timeout)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    if errors:
        raise RuntimeError(errors[0])
    return "".join(out)


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1).strip()
    except (OSError, AttributeError):
        pass
    return {"cpu": cpu, "cores": psutil.cpu_count(), "ram_gib": psutil.virtual_memory().total / GIB,
            "python": platform.python_version(), "system": platform.platform()}


def versions() -> dict:
    from importlib.metadata import version
    names = ("torch", "transformers", "trl", "peft", "bitsandbytes", "ipykernel", "ipywidgets", "plotly")
    return {n: version(n) for n in names}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--only", default="", help="comma-separated set-ups (default: all)")
    p.add_argument("--out", default="")
    p.add_argument("--add", action="store_true", help="add rows to --out instead of writing a new file")
    a = p.parse_args()
    names = [n for n in (a.only.split(",") if a.only else SETUPS) if n]
    if a.add:
        result = json.loads(Path(a.out).read_text())
        names = [n for n in names if n not in {r["setup"] for r in result["rows"]}]
        return measure(result, names, a.steps, Path(a.out))
    base = kernel_run(IMPORTS + "import trl, peft, ftlab.train, ftlab.runs, ftlab.evaluation\n"
                      "print('ROW' + json.dumps(psutil.Process().memory_info().rss / 2**30))")
    result = {"what": __doc__.split("\n\n")[1].replace("\n", " "), "machine": machine(), "versions": versions(),
              "date": datetime.date.today().isoformat(), "steps": a.steps,
              "chose_constants": {"baseline": "CPU.baseline_gib", "quickstart": "CPU.activations, CPU.working_gib",
                                  "top_k": "CPU.activations, CPU.working_gib"},
              "baseline_gib": json.loads(base.split("ROW")[-1]), "rows": []}
    print(f"baseline {result['baseline_gib']:.3f} GiB", flush=True)
    cpu = re.sub(r"[^a-z0-9]+", "-", result["machine"]["cpu"].lower()).strip("-")
    out = Path(a.out or ROOT / "ftlab" / "measured" / f"cpu_{cpu}-{result['machine']['cores']}core_{result['date']}.json")
    measure(result, names, a.steps, out)


def measure(result: dict, names: list, steps: int, out: Path) -> None:
    """Measure each named set-up in a fresh kernel, add its row to `result` and write it to `out`."""
    for name in names:
        kind, fields = SETUPS[name]
        code = IMPORTS + RUN.format(fields=fields, steps=steps, out=f"/tmp/ftlab_cpu_memory/{name}", name=kind)
        row = {"setup": name, **json.loads(kernel_run(code).split("ROW")[-1])}
        if "estimate_gib" in row:
            row["error_pct"] = 100 * (row["estimate_gib"] - row["peak_rss_gib"]) / row["peak_rss_gib"]
            print(f"{name:>14}: measured {row['peak_rss_gib']:.3f} GiB, estimate {row['estimate_gib']:.3f} GiB "
                  f"({row['error_pct']:+.1f} %)", flush=True)
        else:
            print(f"{name:>14}: skipped: {row['skipped'][:80]}", flush=True)
        result["rows"].append(row)
    from ftlab.memory import estimate_memory  # every row's estimate from the calculator as it is now
    for row in result["rows"]:
        if "arguments" in row:
            est = estimate_memory(row["model"], **row["arguments"], device="cpu")
            row.update(estimate_gib=est.total_gib, estimate_components_gib=est.components,
                       error_pct=100 * (est.total_gib - row["peak_rss_gib"]) / row["peak_rss_gib"])
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
