"""What a run really used: CUDA allocator peaks and device memory in use; peak RSS on CPU.

On CUDA, torch's allocator keeps exact counters (max_memory_allocated / max_memory_reserved) and
mem_get_info gives the device's total minus free, i.e. what nvidia-smi shows (reserved + the CUDA
context + other processes). On CPU torch has no such counters and tracemalloc does not see its
allocations, so a background thread samples the process's resident set size (psutil) every few ms.
All figures are GiB (2**30 bytes).
"""
from __future__ import annotations

import threading
import time

import psutil
import torch

from ftlab.errors import FtlabError, check_number, check_text
from ftlab.models import check_device

GIB = 2**30


class MemoryMonitor:
    """Measure a run by phases: `start()`, then `mark("after_load")`, ..., `stop()`; `.report()`.

    As a training listener it marks "after_first_step" on the first step event it receives.
    """

    def __init__(self, device: str | None = None, interval_s: float = 0.005):
        device = check_device(device)  # ConfigError naming `device`, with the devices this machine has
        self.cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
        self.device = device
        self.interval_s = check_number("interval_s", interval_s, 0, 10, lo_open=True)
        self._t0 = None
        self.phases: dict[str, dict] = {}
        self._thread = None
        self._running = False
        self._peak_rss = 0
        self._baseline = 0.0

    # --- sampling -------------------------------------------------------------------------
    def _rss(self) -> int:
        return psutil.Process().memory_info().rss

    def _sample(self):
        while self._running:
            self._peak_rss = max(self._peak_rss, self._rss())
            time.sleep(self.interval_s)

    def start(self) -> "MemoryMonitor":
        if self.cuda:
            torch.cuda.synchronize()
            self._baseline = torch.cuda.memory_allocated(self.device) / GIB
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._baseline = self._rss() / GIB
            self._peak_rss = self._rss()
            self._running = True
            self._thread = threading.Thread(target=self._sample, daemon=True, name="ftlab-rss")
            self._thread.start()
        self._t0 = time.perf_counter()
        return self

    def snapshot(self) -> dict:
        """Current figures (GiB): peaks since start() and what is in use now."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            free, total = torch.cuda.mem_get_info(self.device)
            return {"allocated_gib": torch.cuda.memory_allocated(self.device) / GIB,
                    "peak_allocated_gib": torch.cuda.max_memory_allocated(self.device) / GIB,
                    "peak_reserved_gib": torch.cuda.max_memory_reserved(self.device) / GIB,
                    "device_used_gib": (total - free) / GIB, "device_total_gib": total / GIB,
                    "baseline_gib": self._baseline}
        rss = self._rss()
        self._peak_rss = max(self._peak_rss, rss)
        return {"rss_gib": rss / GIB, "peak_rss_gib": self._peak_rss / GIB, "baseline_gib": self._baseline}

    def mark(self, phase: str) -> dict:
        check_text("phase", phase)
        if self._t0 is None:
            raise FtlabError(f"MemoryMonitor.mark({phase!r}) before start(): call monitor.start() first "
                             "(its figures are measured from there)")
        snap = self.snapshot()
        snap["seconds"] = time.perf_counter() - self._t0
        self.phases[phase] = snap
        return snap

    def stop(self) -> dict:
        if self._t0 is None:
            raise FtlabError("MemoryMonitor.stop() before start(): call monitor.start() first")
        snap = self.mark("end")
        self._running = False
        if self._thread:
            self._thread.join(timeout=1)
        return snap

    # --- as a training listener ---------------------------------------------------------------
    def __call__(self, event: dict):
        if not isinstance(event, dict):  # not an ftlab training event
            return
        if self._t0 is None:  # used as a listener without start(): measure from the first event
            self.start()
        if event.get("kind") == "step" and "after_first_step" not in self.phases:
            self.mark("after_first_step")
        if event.get("kind") == "step":
            event["memory"] = self.snapshot()

    def report(self) -> dict:
        """The whole run's peak in one number per kind, plus the phases."""
        if self._t0 is None:  # no baseline yet: the "peak" would be the whole process's memory
            raise FtlabError("MemoryMonitor.report() before start(): call monitor.start() first (its figures are "
                             "measured from there), then report() once the run is done")
        end = self.phases.get("end") or self.snapshot()
        if self.cuda:
            return {"device": "cuda", "peak_allocated_gib": end["peak_allocated_gib"],
                    "peak_reserved_gib": end["peak_reserved_gib"], "device_used_gib": end["device_used_gib"],
                    "phases": self.phases}
        return {"device": "cpu", "peak_rss_gib": end["peak_rss_gib"],
                "peak_rss_over_baseline_gib": end["peak_rss_gib"] - self._baseline, "phases": self.phases}


def saved_for_backward(model, **inputs) -> int:
    """Bytes autograd keeps for backward in one training forward of `model` on `inputs` (its parameters left out):
    every tensor saved, counted once by its storage, through torch's saved_tensors_hooks. A device-independent
    measure of activation memory, which the calculator's activations are checked against."""
    model.train()
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        seen.setdefault(s.data_ptr(), s.nbytes())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**inputs)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in seen.items() if ptr not in params)
