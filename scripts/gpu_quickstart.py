"""The quickstart's steps, headless, for a machine without Jupyter (e.g. a bare GPU box):
load the embedded model, score ROUGE-L before, LoRA through ftlab.train, score after, report memory.
The notebook stays the source of truth for what the quickstart teaches; this only re-runs its numbers.

    python scripts/gpu_quickstart.py --max_steps 100 --batch_size 16 --seq_len 256 --eval_examples 100
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ftlab.config import TrainConfig  # noqa: E402
from ftlab.data import chat_prompts, fit_to_length, load_records, to_prompt_completion  # noqa: E402
from ftlab.evaluation import generate, rouge  # noqa: E402
from ftlab.measure import MemoryMonitor  # noqa: E402
from ftlab.methods import apply_method, trainable_parameters  # noqa: E402
from ftlab.models import load_model  # noqa: E402
from ftlab.train import train_sft  # noqa: E402

ap = argparse.ArgumentParser()
for name, default in [("model", "smollm2-135m-instruct"), ("method", "lora"), ("max_steps", 100), ("batch_size", 16),
                      ("seq_len", 256), ("learning_rate", 5e-4), ("eval_examples", 100), ("lora_r", 8),
                      ("bits", 16), ("output_dir", "/tmp/ftlab-gpu-quickstart"), ("json_out", "")]:
    ap.add_argument(f"--{name}", type=type(default), default=default)
a = ap.parse_args()
cfg = TrainConfig(model=a.model, method=a.method, max_steps=a.max_steps, batch_size=a.batch_size, seq_len=a.seq_len,
                  learning_rate=a.learning_rate, lora_r=a.lora_r, lora_alpha=2.0 * a.lora_r, bits=a.bits,
                  output_dir=a.output_dir)
mon = MemoryMonitor().start()
base, tok = load_model(cfg.model, bits=cfg.effective_bits)
mon.mark("after_load")
train = fit_to_length(load_records("email_subject", "train", n=cfg.max_steps * cfg.batch_size), tok, cfg.seq_len)
val = fit_to_length(load_records("email_subject", "validation", n=32), tok, cfg.seq_len)
test = fit_to_length(load_records("email_subject", "test", n=a.eval_examples), tok, cfg.seq_len)
refs, prompts = [r["target"] for r in test], chat_prompts(tok, test)
t0 = time.perf_counter()
before = generate(base, tok, prompts, max_new_tokens=24, batch_size=32)
gen_s = time.perf_counter() - t0
model = apply_method(base, cfg)
n_train, n_total = trainable_parameters(model)
result, _ = train_sft(model, tok, to_prompt_completion(train, template="random"), cfg,
                      eval_records=to_prompt_completion(val), listeners=[mon])
mon.stop()
after = generate(model, tok, prompts, max_new_tokens=24, batch_size=32)
out = {"config": cfg.to_dict(), "device": base.ftlab_info["device"], "dtype": base.ftlab_info["dtype"],
       "load_seconds": base.ftlab_info["load_seconds"], "generate_seconds_before": gen_s,
       "trainable": n_train, "total": n_total, "train": result.summary(),
       "rouge_before": rouge(before, refs), "rouge_after": rouge(after, refs), "memory": mon.report(),
       "examples": [{"reference": r, "before": b, "after": x} for r, b, x in list(zip(refs, before, after))[:5]]}
text = json.dumps(out, indent=1, default=str)
if a.json_out:
    Path(a.json_out).write_text(text)
t = result
print(f"{t.steps} steps in {t.seconds:.1f} s ({t.tokens_per_s:.0f} tokens/s); loss {t.first_loss:.2f} -> {t.last_loss:.2f}; "
      f"val {t.eval_loss_before:.3f} -> {t.eval_loss_after:.3f}; ROUGE-L {out['rouge_before']['rougeL']:.3f} -> "
      f"{out['rouge_after']['rougeL']:.3f}; memory {json.dumps({k: v for k, v in out['memory'].items() if k != 'phases'})}")
