"""Runs you can compare: every run under a folder in one table (runs_table; ftlab.widgets.runs_figure draws it).

Two kinds of file are read, found at any depth:
  run.json      the record every ftlab.train.finetune run leaves in its output_dir (ftlab.results.run_record):
                flat fields, read as they are
  results.json  what a lab wrote (ftlab.results.write_results), one shape a lab. What can be found is taken: the
                config's model and data; with a `train` summary (TrainResult.summary(): the file is about one
                run) the config's method, the steps, losses and seconds; ROUGE-L before/after (`rouge_before` /
                `rouge_after`, or `before` / `after` holding a rougeL); the calculator's estimate
                (`memory_estimate`) and the memory measured (`memory`, a MemoryMonitor report). The rest stays
                empty (NaN): nothing is guessed. A lab that trained several set-ups has no one method; the runs
                it made through finetune have their own rows, from their run.json.
A folder with both (the quickstart) is one run, one row: the run record's numbers, the lab's filling the gaps.
A file that cannot be read is a row too, its `note` saying why, so a damaged run is seen, not lost.

Memory comes with its kind, since the two sides may not measure the same thing: the estimate is the GPU
allocator's peak on the config's GPU, what is measured is the GPU's peak allocation on a CUDA run but the
process's resident memory (RSS) on a CPU, which also holds the Python process, torch and the data.
"""
from __future__ import annotations

import math
import os
from datetime import datetime
from pathlib import Path

import pandas as pd

from ftlab.errors import ConfigError, DataError
from ftlab.results import RUN_RECORD, RUN_RECORD_KIND, read_results

LAB_RESULTS = "results.json"
COLUMNS = ("folder", "files", "when", "status", "model", "method", "data", "steps", "train_loss_first",
           "train_loss_last", "val_loss_before", "val_loss_after", "metric", "metric_before", "metric_after",
           "memory_estimated_gib", "memory_estimated_kind", "memory_measured_gib", "memory_measured_kind",
           "seconds", "tokens_per_s", "trainable_parameters", "note")
NUMBERS = ("steps", "train_loss_first", "train_loss_last", "val_loss_before", "val_loss_after", "metric_before",
           "metric_after", "memory_estimated_gib", "memory_measured_gib", "seconds", "tokens_per_s",
           "trainable_parameters")
_FROM_RECORD = {"status": "status", "model": "model", "method": "method", "data": "data", "steps": "steps",
                "train_loss_first": "train_loss_first", "train_loss_last": "train_loss_last",
                "val_loss_before": "eval_loss_before", "val_loss_after": "eval_loss_after",
                "memory_estimated_gib": "memory_estimated_gib", "memory_estimated_kind": "memory_estimated_kind",
                "memory_measured_gib": "memory_measured_gib", "memory_measured_kind": "memory_measured_kind",
                "seconds": "seconds", "tokens_per_s": "tokens_per_s", "trainable_parameters": "trainable_parameters"}
_FROM_SUMMARY = {"steps": "steps", "train_loss_first": "first_loss", "train_loss_last": "last_loss",
                 "val_loss_before": "eval_loss_before", "val_loss_after": "eval_loss_after", "seconds": "seconds",
                 "tokens_per_s": "tokens_per_s"}


def runs_table(root) -> pd.DataFrame:
    """One row a run under `root` (a folder; `~` is the home folder), oldest first: `folder` (relative to root),
    `files` read, `when` (the record's date, else the file's time), status, model, method, data, steps, first and
    last training loss, validation loss before and after, a metric before and after where the results hold one,
    memory estimated and measured with the kind of each, seconds, tokens/s, trainable parameters, and a `note`
    (a failed run's error, a file that could not be read). ConfigError when `root` is not an existing folder."""
    base = _check_root(root)
    found: dict[Path, dict[str, Path]] = {}
    for folder, dirs, files in os.walk(base):  # symlinked folders are not followed: no loop, no run counted twice
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # write_results' and atomic_dir's temporaries
        for name in (RUN_RECORD, LAB_RESULTS):
            if name in files:
                found.setdefault(Path(folder), {})[name] = Path(folder) / name
    rows = [_row(base, folder, files) for folder, files in found.items()]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    for name in NUMBERS:
        table[name] = pd.to_numeric(table[name], errors="coerce").astype(float)
    table["when"] = pd.to_datetime(table["when"])
    return table.sort_values(["when", "folder"], kind="stable").reset_index(drop=True)


def _check_root(root) -> Path:
    if isinstance(root, os.PathLike):
        root = os.fspath(root)
    if not isinstance(root, str) or not root.strip():
        raise ConfigError("root", root, "a folder of runs: a non-empty string or path, such as 'runs'")
    path = Path(root).expanduser()
    if not path.exists():
        raise ConfigError("root", root, f"an existing folder ({str(path)!r} does not exist)")
    if not path.is_dir():
        raise ConfigError("root", root, f"a folder ({str(path)!r} is a file)")
    return path


def _row(base: Path, folder: Path, files: dict[str, Path]) -> dict:
    """The folder's run: its run record's fields, then what the lab's results.json adds."""
    row = {"folder": str(folder.relative_to(base)), "files": " + ".join(files)}
    notes, times = [], []
    for name, path in files.items():
        try:
            times.append(datetime.fromtimestamp(path.stat().st_mtime))
            data = read_results(folder, name)
            if not isinstance(data, dict):
                raise DataError(f"{name} holds a JSON {type(data).__name__}, not an object of named fields")
        except (DataError, OSError) as e:
            notes.append(f"{name} not read: {e}")
            continue
        is_record = data.get("record") == RUN_RECORD_KIND
        fields = _from_record(data) if is_record else _from_lab(data)
        for key, value in fields.items():  # the run record was read first: the lab's file fills its gaps only
            if _missing(row.get(key)) and not _missing(value):
                row[key] = value
        if is_record and data.get("error"):
            notes.append(str(data["error"]))
    row.setdefault("when", min(times, default=None))
    row["note"] = "; ".join(notes) or None
    return row


def _from_record(r: dict) -> dict:
    row = {key: r.get(field) for key, field in _FROM_RECORD.items()}
    return {**_typed(row), "when": _date(r.get("date"))}


def _from_lab(r: dict) -> dict:
    cfg = _dict(r.get("config"))
    train = _dict(r.get("train"))
    row = {"model": cfg.get("model"), "data": cfg.get("dataset"),
           "trainable_parameters": r.get("trainable_parameters")}
    if "steps" in train:  # a summary of one run: the config's method is the method that ran
        row.update({key: train.get(field) for key, field in _FROM_SUMMARY.items()},
                   method=cfg.get("method"), status="stopped" if train.get("stopped") else "finished")
    if _missing(row.get("val_loss_after")):
        row["val_loss_after"] = r.get("validation_loss")
    for before, after in (("rouge_before", "rouge_after"), ("before", "after")):
        b, a = _dict(r.get(before)), _dict(r.get(after))
        if "rougeL" in b or "rougeL" in a:
            row.update(metric="ROUGE-L", metric_before=b.get("rougeL"), metric_after=a.get("rougeL"))
            break
    estimate, measured = _dict(r.get("memory_estimate")), _dict(r.get("memory"))
    if "peak_allocated_gib" in estimate:
        row.update(memory_estimated_gib=estimate["peak_allocated_gib"],
                   memory_estimated_kind=f"GPU peak allocated on {estimate.get('gpu', '?')} (estimate)")
    if measured.get("device") == "cuda" and "peak_allocated_gib" in measured:
        row.update(memory_measured_gib=measured["peak_allocated_gib"], memory_measured_kind="GPU peak allocated")
    elif measured.get("device") == "cpu" and "peak_rss_gib" in measured:
        row.update(memory_measured_gib=measured["peak_rss_gib"], memory_measured_kind="CPU peak RSS")
    return _typed(row)


def _typed(row: dict) -> dict:
    """Numbers as they are (the table coerces them); text only if it is text (a damaged field stays empty)."""
    return {k: v for k, v in row.items() if k in NUMBERS or isinstance(v, str)}


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _date(text):
    """An ISO date as local time without a zone (comparable with a file's time); None if it is not one."""
    try:
        return datetime.fromisoformat(text).astimezone().replace(tzinfo=None)
    except (TypeError, ValueError):
        return None


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
