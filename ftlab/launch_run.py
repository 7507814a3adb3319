"""Run the launch files that ftlab.launch_files.write_launch wrote, from a notebook or a script: torchrun as a
separate process tree, the first process's training events handed to the notebook's listeners as they come."""
from __future__ import annotations

import collections
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from ftlab.errors import ConfigError, FtlabError, check_int, check_number, check_text
from ftlab.launch_files import CPU_ENV, EVENT, RESULT


def free_port() -> int:  # a port free on this machine now: two runs (or a test) on one machine must not meet
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_launch(folder, num_processes: int, *, listeners: list | None = None, cpu: bool | None = None,
               timeout_s: float | None = None) -> dict:
    """Run the train.py that write_launch wrote in `folder` as `torchrun --nproc_per_node num_processes` (one
    machine), from a notebook or a script: a separate process tree, so it works whatever this kernel has touched
    (CUDA, bitsandbytes), unlike a fork. The first process's training events reach `listeners` here as they
    come; returns its summary (world_size, steps, losses, seconds, saved_to). `cpu`: CPU processes over gloo
    (default: when this machine has no CUDA GPU). A failed run raises FtlabError with the end of its output."""
    folder = Path(check_text("folder", os.fspath(folder) if isinstance(folder, os.PathLike) else folder))
    if not (folder / "train.py").is_file():
        raise ConfigError("folder", str(folder), "a folder write_launch wrote (it has no train.py)")
    n = check_int("num_processes", num_processes, 1)
    if timeout_s is not None:
        timeout_s = check_number("timeout_s", timeout_s, 0, lo_open=True)
    if cpu is None:
        import torch  # lazy: only a launch asks whether there is a GPU; the calculator's imports stay torch-free
        cpu = not torch.cuda.is_available()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if cpu:  # the cores shared out among the processes, unless the caller set OMP_NUM_THREADS
        env[CPU_ENV] = "1"
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port", str(free_port()),
           "train.py"]
    proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    timed_out = threading.Event()
    timer = threading.Timer(timeout_s, lambda: (timed_out.set(), _stop(proc))) if timeout_s else None
    if timer:
        timer.start()
    tail, summary = collections.deque(maxlen=40), None
    try:
        for line in proc.stdout:
            if line.startswith(EVENT):
                for listener in listeners or []:
                    listener(json.loads(line[len(EVENT):]))
            elif line.startswith(RESULT):
                summary = json.loads(line[len(RESULT):])
            else:
                tail.append(line.rstrip())
        code = proc.wait()
    finally:
        if timer:
            timer.cancel()
        if proc.poll() is None:  # an error or an interrupt here: the run must not go on without anyone reading
            _stop(proc)
    if code != 0 or summary is None:
        stopped = f" (stopped after timeout_s={timeout_s})" if timed_out.is_set() else ""
        raise FtlabError(f"run_launch: torchrun in {folder} ended with exit code {code}{stopped}:\n" + "\n".join(tail))
    return summary


def _stop(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """Stop torchrun and its workers. Its workers run in sessions of their own, so a SIGKILL of torchrun alone
    leaves them running (holding their GPU memory); SIGTERM lets torchrun stop them first, SIGKILL if it hangs."""
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()


__all__ = ["free_port", "run_launch"]
