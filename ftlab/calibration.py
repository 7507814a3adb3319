"""GPU memory measured on real set-ups (ftlab/measured/*.jsonl) and the calculator's estimates for them.

Rows are written by scripts/measure_memory.py (fields: shared/calibration/README.md); the
"shared" file is the calibration set this project was given, the "ftlab" file its own sweep.
"""
from __future__ import annotations

import json
from pathlib import Path

from ftlab.memory import estimate_memory
from ftlab.method_table import INFERENCE, METHODS

MEASURED = Path(__file__).resolve().parent / "measured"
FILES = {"shared": "h100_shared_2026-11-22.jsonl", "ftlab": "h100_ftlab_2026-11-22.jsonl"}
ARCH = {"smollm2-135m": "smollm2-135m-instruct", "smollm2-1.7b": "smollm2-1.7b-instruct",
        "qwen2.5-0.5b": "qwen2.5-0.5b-instruct", "qwen2.5-1.5b": "qwen2.5-1.5b-instruct",
        "llama-3.2-1b": "llama-3.2-1b", "llama-3.2-3b": "llama-3.2-3b", "llama-3.1-8b": "llama-3.1-8b",
        "mistral-7b": "mistral-7b-instruct-v0.3", "gemma-3-270m": "gemma-3-270m"}
# the measurement files' names for a method -> ftlab's (each row's aliases, e.g. "qdora" for dora)
METHOD = {alias: m.name for m in (INFERENCE, *METHODS.values()) for alias in m.aliases}


def load_rows(which: str = "shared") -> list[dict]:
    """Measured rows that ran (rows with an "error" field are skipped)."""
    rows = [json.loads(line) for line in (MEASURED / FILES[which]).read_text().splitlines() if line.strip()]
    return [r for r in rows if "error" not in r]


def estimate_args(row: dict) -> dict:
    """estimate_memory's arguments for a measured row."""
    bits = row.get("bits") or (32 if row.get("dtype") == "fp32" else 16)
    return dict(model=ARCH[row["arch"]], method=METHOD.get(row["method"], row["method"]), bits=bits,
                lora_r=row.get("r", 16), lora_targets=row.get("targets", "all-linear"), batch_size=row["batch"],
                seq_len=row["seq"], gradient_checkpointing=bool(row.get("gc")),
                optimizer=row.get("optimizer", "adamw"), trainer="trl" if row.get("trl") else "plain")


def label(row: dict) -> str:
    a = estimate_args(row)
    extras = [x for x in ("gc" if a["gradient_checkpointing"] else "", "TRL" if a["trainer"] == "trl" else "",
                          a["optimizer"] if a["optimizer"] != "adamw" else "") if x]
    return f"{row['arch']} {a['method']} {a['bits']}-bit {a['batch_size']}×{a['seq_len']} {' '.join(extras)}".strip()


def compare(which: str = "shared") -> list[dict]:
    """Per row: measured and estimated device memory and peak allocation, relative errors."""
    out = []
    for r in load_rows(which):
        e = estimate_memory(**estimate_args(r))
        out.append({"label": label(r), "measured_total": r["device_used_gb"], "estimated_total": e.total_gib,
                    "measured_peak": r["peak_alloc_gb"], "estimated_peak": e.peak_allocated_gib,
                    "error_total": e.total_gib / r["device_used_gb"] - 1,
                    "error_peak": e.peak_allocated_gib / r["peak_alloc_gb"] - 1, "row": r})
    return out
