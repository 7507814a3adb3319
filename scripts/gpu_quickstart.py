"""The quickstart's steps, headless, for a machine without Jupyter (e.g. a bare GPU box):
load the embedded model, score ROUGE-L before, LoRA through ftlab.train, score after, report memory.
The notebook stays the source of truth for what the quickstart teaches; this only re-runs its numbers.

    python scripts/gpu_quickstart.py --max_steps 100 --batch_size 16 --seq_len 256 --eval_examples 100
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ftlab.config import TrainConfig  # noqa: E402
from ftlab.data import fit_to_length, load_records, to_prompt_completion  # noqa: E402
from ftlab.evaluation import rouge  # noqa: E402
from ftlab.models import load_tokenizer  # noqa: E402
from ftlab.runs import run_and_measure  # noqa: E402

ap = argparse.ArgumentParser()
for name, default in [("model", "smollm2-135m-instruct"), ("method", "lora"), ("max_steps", 100), ("batch_size", 16),
                      ("seq_len", 256), ("learning_rate", 5e-4), ("eval_examples", 100), ("lora_r", 8),
                      ("bits", 16), ("output_dir", "/tmp/ftlab-gpu-quickstart"), ("json_out", "")]:
    ap.add_argument(f"--{name}", type=type(default), default=default)
a = ap.parse_args()
cfg = TrainConfig(model=a.model, method=a.method, max_steps=a.max_steps, batch_size=a.batch_size, seq_len=a.seq_len,
                  learning_rate=a.learning_rate, lora_r=a.lora_r, lora_alpha=2.0 * a.lora_r, bits=a.bits,
                  output_dir=a.output_dir)
tok = load_tokenizer(cfg.model)
train = fit_to_length(load_records("email_subject", "train", n=cfg.max_steps * cfg.batch_size), tok, cfg.seq_len)
val = fit_to_length(load_records("email_subject", "validation", n=32), tok, cfg.seq_len)
test = fit_to_length(load_records("email_subject", "test", n=a.eval_examples), tok, cfg.seq_len)
refs = [r["target"] for r in test]
# load (memory watched from before the load), answer the test e-mails, apply and train the method, answer again
run = run_and_measure(cfg, to_prompt_completion(train, template="random"), to_prompt_completion(val), test,
                      score_before=True, details=True, generate_batch_size=32)
before, after, info = run["predictions_before"], run["predictions"], run["model_info"]
out = {"config": cfg.to_dict(), "device": info["device"], "dtype": info["dtype"],
       "load_seconds": info["load_seconds"], "generate_seconds_before": run["seconds"]["generate_before"],
       "trainable": run["trainable"], "total": run["total_parameters"], "train": run["train"],
       "optimizer_bytes_per_param": run["optimizer_bytes_per_param"],
       "rouge_before": rouge(before, refs), "rouge_after": rouge(after, refs), "memory": run["memory"],
       "examples": [{"reference": r, "before": b, "after": x} for r, b, x in list(zip(refs, before, after))[:5]]}
text = json.dumps(out, indent=1, default=str)
if a.json_out:
    Path(a.json_out).write_text(text)
t = run["train"]
print(f"{t['steps']} steps in {t['seconds']:.1f} s ({t['tokens_per_s']:.0f} tokens/s); loss {t['first_loss']:.2f} -> "
      f"{t['last_loss']:.2f}; val {t['eval_loss_before']:.3f} -> {t['eval_loss_after']:.3f}; ROUGE-L "
      f"{out['rouge_before']['rougeL']:.3f} -> {out['rouge_after']['rougeL']:.3f}; memory "
      f"{json.dumps({k: v for k, v in out['memory'].items() if k != 'phases'})}")
