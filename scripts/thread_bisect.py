"""Why was an SFTTrainer slower in a new threading.Thread than in the main thread on a GPU? Side by side, one process.

Each run builds a fresh SFTTrainer (full fine-tuning, 16 x 512 tokens a step by default) and trains it in the main
thread or in a new thread; modes (comma-separated in MODES, run in that order after one warm-up run in the main
thread): main, thread, *_notriton (TRL's Triton loss kernels off), thread_switch (GIL switch interval 0.5 s),
thread_dev (torch.cuda.set_device in the thread), *_prof (under cProfile; the top functions are printed and the
profiles written to OUT). Prints tokens/s, step times, CPU seconds and the thread-local torch state of each run;
writes OUT/bisect.json. Found with it (H100, 2026-11-23): ftlab/measured/h100_thread_bisect_2026-11-23.json.

    OUT=/tmp/bisect python scripts/thread_bisect.py                  # a GPU
    OUT=/tmp/bisect STEPS=7 BATCH=2 SEQ=128 MODES=main,thread_prof python scripts/thread_bisect.py   # a CPU smoke run
"""
import cProfile, json, os, statistics, sys, threading, time
import torch
from datasets import Dataset
from transformers import TrainerCallback
from trl import SFTTrainer
from ftlab.config import TrainConfig
from ftlab.data import sft_data
from ftlab.methods import apply_method
from ftlab.models import load_model
from ftlab.train import sft_config

OUT = os.environ["OUT"]
CUDA = torch.cuda.is_available()
STEPS, SKIP = int(os.environ.get("STEPS", 40)), 5
cfg = TrainConfig(model="smollm2-135m-instruct", method=os.environ.get("METHOD", "full"), max_steps=STEPS,
                  batch_size=int(os.environ.get("BATCH", 16)), seq_len=int(os.environ.get("SEQ", 512)), output_dir="/tmp/d")
_, tok = load_model(cfg.model)
train, _ = sft_data(cfg, tok)
ds = Dataset.from_list(train)


def tls_state():
    s = {"thread": threading.current_thread().name, "grad": torch.is_grad_enabled(),
         "num_threads": torch.get_num_threads(), "interop": torch.get_num_interop_threads(),
         "device": torch.cuda.current_device() if CUDA else -1, "stream": str(torch.cuda.current_stream()) if CUDA else "",
         "f32prec": torch.get_float32_matmul_precision(), "tf32": torch.backends.cuda.matmul.allow_tf32,
         "trace": repr(sys.gettrace()), "profile": repr(sys.getprofile()),
         "th_trace": repr(getattr(threading, "gettrace", lambda: None)()),
         "th_profile": repr(getattr(threading, "getprofile", lambda: None)()),
         "switch": sys.getswitchinterval(), "n_threads_py": threading.active_count(),
         "n_tasks": len(os.listdir("/proc/self/task"))}
    for name in ("_dispatch_tls_local_include_set", "_dispatch_tls_local_exclude_set"):
        try:
            s[name] = str(getattr(torch._C, name)())
        except Exception as e:
            s[name] = "n/a " + type(e).__name__
    try:
        from torch.overrides import _get_current_function_mode_stack
        s["fn_modes"] = repr(_get_current_function_mode_stack())
    except Exception as e:
        s["fn_modes"] = "n/a"
    return s


class Clock(TrainerCallback):
    def __init__(self):
        self.t, self.tok, self.state = [], [], None

    def on_step_end(self, args, state, control, **kw):
        if CUDA:
            torch.cuda.synchronize()
        self.t.append(time.perf_counter())
        self.tok.append(int(state.num_input_tokens_seen or 0))
        if state.global_step == 10:
            self.state = tls_state()

    def summary(self):
        dt = [b - a for a, b in zip(self.t[SKIP - 1:], self.t[SKIP:])]
        return {"tps": (self.tok[-1] - self.tok[SKIP - 1]) / (self.t[-1] - self.t[SKIP - 1]),
                "step_ms_median": 1000 * statistics.median(dt), "step_ms_max": 1000 * max(dt),
                "step_ms_min": 1000 * min(dt)}


def run(mode):
    clock = Clock()
    model = apply_method(load_model(cfg.model)[0], cfg)
    tr = SFTTrainer(model=model, args=sft_config(cfg), train_dataset=ds, processing_class=tok, callbacks=[clock])
    info = {}

    def body():
        if "dev" in mode and CUDA:
            torch.cuda.set_device(0)
        old = sys.getswitchinterval()
        if "switch" in mode:
            sys.setswitchinterval(0.5)
        prof = cProfile.Profile() if "prof" in mode else None
        import trl.kernels.chunked_logprob as clp
        triton_was = clp._TRITON_AVAILABLE
        if "notriton" in mode:
            clp._TRITON_AVAILABLE = False
        p0, t0 = time.process_time(), time.thread_time()
        if prof:
            prof.enable()
        tr.train()
        if prof:
            prof.disable()
            prof.dump_stats(f"{OUT}/{mode}.prof")
        info["cpu_process_s"], info["cpu_thread_s"] = time.process_time() - p0, time.thread_time() - t0
        sys.setswitchinterval(old)
        clp._TRITON_AVAILABLE = triton_was

    w0 = time.perf_counter()
    if mode.startswith("main"):
        body()
    else:
        th = threading.Thread(target=body, name="train-" + mode)
        th.start()
        th.join()
    info["wall_s"] = time.perf_counter() - w0
    info.update(clock.summary())
    info["tls"] = clock.state
    del tr, model
    torch.cuda.empty_cache()
    return info


print("main thread state:", json.dumps(tls_state()), flush=True)
run("main")  # warm-up: kernels, allocator
res = {}
order = os.environ.get("MODES", "main,thread,main_notriton,thread_notriton,thread_switch,main_prof,thread_prof,thread,main,thread_notriton,main_notriton").split(",")
for mode in order:
    info = run(mode)
    res.setdefault(mode, []).append(info)
    print(mode, json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in info.items() if k != "tls"}),
          flush=True)
    if mode in ("main", "thread") and len(res[mode]) == 1:
        print("   tls", json.dumps(info["tls"]), flush=True)
json.dump(res, open(f"{OUT}/bisect.json", "w"), indent=1)
import pstats
for mode in ("main_prof", "thread_prof"):
    if os.path.exists(f"{OUT}/{mode}.prof"):
        print(f"===== {mode} top by tottime")
        pstats.Stats(f"{OUT}/{mode}.prof").sort_stats("tottime").print_stats(18)
