"""What the live plots cost the training thread, in a real Jupyter kernel.

The issue's bound: plotting costs at most 3 % of the step time. A redraw sends the plot's traces to the
browser through the kernel's comm (serialised on the calling thread, the training thread), so its cost
can grow with the number of points already drawn: late in a long run it matters most. This script
starts an ipykernel (jupyter_client), builds the widgets a Run shows (LossPlot, MemoryPlot,
TrainingProgress) with their comms open, pre-fills each with `--prefill` steps (a run that far along),
then feeds `--steps` step events `--step_ms` apart (a sleep stands for the step) and reports the time
spent inside the listeners against the wall time: the share of training time plotting takes. Also the
median cost of one redraw at that many points.

    python scripts/bench_plots.py                          # prefill 0, 1000, 5000; 50 ms steps (a fast GPU)
    python scripts/bench_plots.py --step_ms 5000           # CPU-like steps
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

KERNEL_CODE = r"""
import json, statistics, time
from ftlab.widgets import LossPlot, MemoryPlot, TrainingProgress
from IPython.display import display

def bench(prefill, steps, step_s):
    loss, mem, prog = LossPlot(), MemoryPlot(), TrainingProgress()
    display(loss.widget, mem.widget, prog.widget)           # comms open, as in a notebook
    listeners = [loss, mem, prog]
    mem.set_estimate(1.5)
    def event(s):
        return {"kind": "step", "step": s, "max_steps": prefill + steps, "loss": 3.0 - s * 1e-4,
                "learning_rate": 5e-4, "tokens_per_s": 1e4, "elapsed_s": s * step_s,
                "memory_gib": 1.0, "peak_memory_gib": 1.2, "memory_kind": "cuda allocated"}
    for L in listeners:
        L({"kind": "begin", "max_steps": prefill + steps})
    for s in range(1, prefill + 1):                          # a run that far along, drawn once
        loss.steps.append(s); loss.losses.append(3.0)
        mem.steps.append(s); mem.used.append(1.0); mem.peak.append(1.2)
    loss.redraw(); mem.redraw()
    # one redraw at this many points, each plot (median of 15)
    redraw_ms = {}
    for name, plot in (("loss", loss), ("memory", mem)):
        ts = []
        for _ in range(15):
            t = time.perf_counter(); plot.redraw(); ts.append(time.perf_counter() - t)
        redraw_ms[name] = 1e3 * statistics.median(ts)
    # a run: a step (sleep), then its event to every listener; plotting's share of the wall time
    inside = 0.0
    t0 = time.perf_counter()
    for s in range(prefill + 1, prefill + steps + 1):
        time.sleep(step_s)
        t = time.perf_counter()
        for L in listeners:
            L(event(s))
        inside += time.perf_counter() - t
    wall = time.perf_counter() - t0
    return {"prefill": prefill, "steps": steps, "step_ms": step_s * 1e3, "listener_s": inside, "wall_s": wall,
            "share_pct": 100 * inside / wall, "redraw_ms": redraw_ms}
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefill", default="0,1000,5000", help="steps already on the plots, comma-separated")
    ap.add_argument("--steps", type=int, default=200, help="step events fed after the prefill")
    ap.add_argument("--step_ms", type=float, default=50.0, help="time a step takes (a sleep stands for it)")
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    a = ap.parse_args()

    from jupyter_client.manager import start_new_kernel
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(ROOT))
    try:
        def execute(code: str) -> str:
            """Run code in the kernel, drain its iopub (as a frontend would), return its stdout."""
            out, msg_id = [], kc.execute(code)
            while True:
                msg = kc.get_iopub_msg(timeout=600)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if msg["msg_type"] == "stream":
                    out.append(msg["content"]["text"])
                elif msg["msg_type"] == "error":
                    raise RuntimeError("\n".join(msg["content"]["traceback"]))
                elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    return "".join(out)

        execute(KERNEL_CODE)
        rows = []
        for prefill in [int(p) for p in a.prefill.split(",")]:
            row = json.loads(execute(f"print(json.dumps(bench({prefill}, {a.steps}, {a.step_ms / 1e3})))"))
            rows.append(row)
            print(f"prefill {prefill:>5} steps, {a.steps} steps of {a.step_ms:.0f} ms: plotting "
                  f"{row['share_pct']:.2f} % of the wall time; one redraw: loss {row['redraw_ms']['loss']:.2f} ms, "
                  f"memory {row['redraw_ms']['memory']:.2f} ms", flush=True)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"argv": sys.argv[1:], "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
