"""Measure an encoder's classification training on the CPU beside ftlab's encoder estimate (ftlab.memory_encoder).

For each method and sequence length, in a fresh process (the training stack, peft and the Trainer imported before
the baseline, as in a kernel that ran a method once): the MiniLM-L6 encoder preset with a 4-label head,
ftlab.classify.with_method, one epoch of train_classifier over 64 records long enough that every batch is
`seq` tokens; the row is the process's peak RSS over its baseline (ftlab.measure.MemoryMonitor) next to the
estimate's total less its baseline (estimate_memory(..., task="classification", device="cpu")). A second number
needs no RSS: the bytes autograd saves in one training forward, counted with torch's saved_tensors_hooks, next to
the estimate's activations before the CPU factor (the test suite checks the same, tests/test_memory_encoder.py).

Usage: HF_HUB_OFFLINE=1 python scripts/measure_encoder_memory.py [--seq 48,128] [--out FILE]
Writes ftlab/measured/cpu_encoder_<date>.json (or FILE).
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METHODS = {"full": {}, "lora": dict(lora_r=8, lora_targets=["query", "value"]), "ia3": {}, "bitfit": {},
           "top_k": dict(top_k_layers=2)}
LABELS = ["a", "b", "c", "d"]

CHILD = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
import peft, trl  # noqa: F401  (in the baseline, as in a kernel)
from transformers import Trainer, logging  # noqa: F401
logging.set_verbosity_error()
import torch
from ftlab.classify import load_classifier, train_classifier, with_method
from ftlab.measure import MemoryMonitor, saved_for_backward
from ftlab.memory import estimate_memory
from ftlab.runs import release_freed_memory

method, seq, knobs, labels = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
words = "the of a an to in is was for on that with by it as at from be this which or are".split()
records = [{"text": " ".join(words[(i * 7 + j) % len(words)] for j in range(2 * seq)), "label": labels[i % len(labels)]}
           for i in range(64)]
est = estimate_memory("minilm-l6", task="classification", method=method, num_labels=len(labels), batch_size=16,
                      seq_len=seq, device="cpu", **knobs)
raw = estimate_memory("minilm-l6", task="classification", method=method, num_labels=len(labels), batch_size=16,
                      seq_len=seq, **knobs).components["activations"]
release_freed_memory()
monitor = MemoryMonitor().start()
model, tok = load_classifier("minilm-l6", labels)
model = with_method(model, method, **knobs)
train_classifier(model, tok, records, labels, epochs=1, batch_size=16, max_length=seq)
monitor.stop()
measured = monitor.report()["peak_rss_over_baseline_gib"]
enc = tok([r["text"] for r in records[:16]], truncation=True, max_length=seq, padding=True, return_tensors="pt")
saved = saved_for_backward(model, **enc, labels=torch.zeros(16, dtype=torch.long)) / 2**30
print("ROW", json.dumps(dict(method=method, seq=seq, batch=16, measured_over_baseline_gib=measured,
                             estimated_over_baseline_gib=est.total_gib - est.components["baseline"],
                             saved_for_backward_gib=saved, estimated_activations_gib=raw,
                             trainable=est.trainable_params)))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", default="48,128")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    rows = []
    for seq in [int(s) for s in a.seq.split(",")]:
        for method, knobs in METHODS.items():
            p = subprocess.run([sys.executable, "-c", CHILD, method, str(seq), json.dumps(knobs), json.dumps(LABELS)],
                               capture_output=True, text=True, cwd=ROOT)
            line = next((x for x in p.stdout.splitlines() if x.startswith("ROW ")), None)
            if line is None:
                sys.exit(f"{method} seq={seq} failed:\n{p.stderr[-3000:]}")
            row = json.loads(line[4:])
            row["error"] = row["estimated_over_baseline_gib"] / row["measured_over_baseline_gib"] - 1
            row["activations_error"] = row["estimated_activations_gib"] / row["saved_for_backward_gib"] - 1
            rows.append(row)
            print(f"{method:7s} seq {seq:4d}: RSS over baseline {row['measured_over_baseline_gib']:.3f} GiB, estimate "
                  f"{row['estimated_over_baseline_gib']:.3f} ({100 * row['error']:+.1f} %); saved for backward "
                  f"{row['saved_for_backward_gib']:.3f}, estimate {row['estimated_activations_gib']:.3f} "
                  f"({100 * row['activations_error']:+.1f} %)", flush=True)
    import torch
    import transformers
    out = Path(a.out or ROOT / "ftlab" / "measured" / f"cpu_encoder_{datetime.date.today().isoformat()}.json")
    out.write_text(json.dumps({"what": __doc__.splitlines()[0], "machine": platform.processor() or platform.machine(),
                               "cores": __import__("os").cpu_count(), "date": datetime.date.today().isoformat(),
                               "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
                               "model": "minilm-l6", "rows": rows}, indent=1) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
