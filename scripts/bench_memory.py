"""How long one estimate_memory call takes (the contract asks ≤ 5 ms): median over many set-ups.

    python scripts/bench_memory.py
"""
import itertools
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ftlab.memory import estimate_memory  # noqa: E402

setups = list(itertools.product(["smollm2-135m-instruct", "qwen2.5-7b-instruct", "llama-3.1-8b", "mixtral-8x7b"],
                                ["full", "lora", "qlora", "dora", "ia3", "prompt_tuning", "inference"],
                                [1, 8], [512, 4096], [False, True], ["trl", "plain"]))
estimate_memory("smollm2-135m-instruct")  # first call imports ftlab.models
times = []
for _ in range(3):
    for model, method, b, s, gc, trainer in setups:
        t0 = time.perf_counter()
        estimate_memory(model, method=method, batch_size=b, seq_len=s, gradient_checkpointing=gc, trainer=trainer,
                        gpu="A100-80GB")
        times.append(time.perf_counter() - t0)
times.sort()
print(f"{len(times)} calls: median {1e3 * statistics.median(times):.3f} ms, "
      f"p99 {1e3 * times[int(0.99 * len(times))]:.3f} ms, max {1e3 * times[-1]:.3f} ms")
