"""Throughput of ftlab's runner against a bare TRL SFTTrainer script on the same settings.

Both train the same model with the same method, data, SFTConfig (ftlab.train.sft_config) and seeds; the
only difference is what ftlab adds: the ReportCallback (events with loss, tokens/s and memory), a
background thread (ftlab.train.Run), and the live widgets listening (LossPlot, MemoryPlot,
TrainingProgress; without a browser attached their updates are computed but sent nowhere). Runs
alternate ftlab / bare, `--repeats` times each, in one process; each run's tokens/s counts the tokens
of the steps after the first `--skip` (warm-up) over their wall time. Prints medians and the ratio.

    python scripts/bench_throughput.py                      # CPU: the embedded model, small settings
    python scripts/bench_throughput.py --steps 60 --batch_size 16 --seq_len 512 --repeats 5   # a GPU
"""
from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

from transformers import TrainerCallback


class StepClock(TrainerCallback):
    """The same clock for both runners: wall time and tokens between the end of step `skip` and the last."""

    def __init__(self, skip: int):
        self.skip, self.t0, self.tok0, self.t1, self.tok1 = skip, None, 0, None, 0

    def on_step_end(self, args, state, control, **kw):
        import torch
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        now, tokens = time.perf_counter(), int(state.num_input_tokens_seen or 0)
        if state.global_step == self.skip:
            self.t0, self.tok0 = now, tokens
        self.t1, self.tok1 = now, tokens

    @property
    def tokens_per_s(self) -> float:
        return (self.tok1 - self.tok0) / (self.t1 - self.t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--method", default="lora")
    ap.add_argument("--dataset", default="email_subject")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--skip", type=int, default=2, help="warm-up steps left out of tokens/s")
    ap.add_argument("--batch_size", type=int, default=4)
    ap.add_argument("--seq_len", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    ap.add_argument("--ablate", action="store_true",
                    help="also bare TRL plus one of ftlab's parts at a time (the NaN guard, the reporting callback "
                         "with the live plots, a new thread each run, ftlab's one long-lived training thread), to "
                         "see which part costs what")
    ap.add_argument("--runners", default="",
                    help="comma-separated subset of the runners to time (e.g. 'ftlab,bare_trl,bare+ftlab thread'); "
                         "default: all (ftlab and bare_trl, plus the ablation's with --ablate)")
    a = ap.parse_args()

    import datasets
    from datasets import Dataset
    from trl import SFTTrainer

    from ftlab.config import TrainConfig
    from ftlab.data import sft_data
    from ftlab.methods import apply_method
    from ftlab.models import load_model
    from ftlab.runner import Run
    from ftlab.train import sft_config, train_sft
    from ftlab.widgets import LossPlot, MemoryPlot, TrainingProgress

    datasets.disable_progress_bars()
    cfg = TrainConfig(model=a.model, method=a.method, dataset=a.dataset, max_steps=a.steps, batch_size=a.batch_size,
                      seq_len=a.seq_len, output_dir="/tmp/ftlab-bench")
    _, tok = load_model(cfg.model)
    train, _ = sft_data(cfg, tok)

    def fresh():
        model, _ = load_model(cfg.model, bits=cfg.effective_bits)
        return apply_method(model, cfg)

    def ftlab_run() -> float:
        clock = StepClock(a.skip)
        model = fresh()
        run = Run(lambda cb: train_sft(model, tok, train, cfg, callback=cb, eval_before=False, extra_callbacks=[clock]),
                  listeners=[LossPlot(), MemoryPlot(), TrainingProgress()])
        run.start(background=True).wait()
        return clock.tokens_per_s

    def bare_run(callbacks=(), thread=None) -> float:
        clock = StepClock(a.skip)
        model = fresh()
        trainer = SFTTrainer(model=model, args=sft_config(cfg), train_dataset=Dataset.from_list(train),
                             processing_class=tok, callbacks=[clock, *callbacks])
        if thread == "new":  # a fresh thread each run: PyTorch's per-thread caches start empty every time
            t = threading.Thread(target=trainer.train)
            t.start()
            t.join()
        elif thread == "ftlab":  # the long-lived thread ftlab's background runs use (Run hands errors back)
            Run(lambda cb: trainer.train()).start(background=True).wait()
        else:
            trainer.train()
        return clock.tokens_per_s

    runners = {"ftlab": ftlab_run, "bare_trl": bare_run}
    if a.ablate:
        from ftlab.guard import GoodWeights
        from ftlab.report import ReportCallback
        runners.update({
            "bare+guard": lambda: bare_run([GoodWeights()]),
            "bare+report+plots": lambda: bare_run([ReportCallback([LossPlot(), MemoryPlot(), TrainingProgress()])]),
            "bare+new thread": lambda: bare_run(thread="new"),
            "bare+ftlab thread": lambda: bare_run(thread="ftlab")})
    names = list(runners)
    if a.runners:
        names = [n.strip() for n in a.runners.split(",")]
        unknown = [n for n in names if n not in runners]
        if unknown or not {"ftlab", "bare_trl"} <= set(names):
            ap.error(f"--runners={a.runners!r}: must name ftlab and bare_trl, from {list(runners)} "
                     f"(unknown: {unknown})")
    results = {k: [] for k in names}
    for i in range(a.repeats):  # rotate the order so that no runner always goes first
        for name in names[i % len(names):] + names[:i % len(names)]:
            results[name].append(runners[name]())
            print(f"repeat {i + 1}: {name:>18} {results[name][-1]:9.1f} tokens/s", flush=True)
    import torch
    med = {k: statistics.median(v) for k, v in results.items()}
    import datetime
    import importlib.metadata as md
    summary = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
               "date": datetime.date.today().isoformat(),
               "versions": {p: md.version(p) for p in ("torch", "transformers", "trl", "peft", "accelerate")},
               "settings": vars(a), "tokens_per_s": results, "median": med, "ratio": med["ftlab"] / med["bare_trl"],
               "ratios": {k: v / med["bare_trl"] for k, v in med.items()}}
    for k, v in med.items():
        print(f"median {k:>18}: {v:9.1f} tokens/s, {v / med['bare_trl']:.3f}x bare TRL", flush=True)
    print(f"median tokens/s: ftlab {med['ftlab']:.1f}, bare TRL {med['bare_trl']:.1f}, "
          f"ratio {summary['ratio']:.3f} ({summary['device']})")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
