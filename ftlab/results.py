"""Labs write results.json (numbers only, no secrets); tests read it back. Every ftlab.train.finetune run also
leaves run.json (run_record), one shape for all, which ftlab.run_table lists beside the labs' results.json."""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from ftlab.errors import ConfigError, DataError, check_text


_JSON_ALLOWED = ("JSON-able values: numbers, strings, True/False, None, and lists and dicts of them "
                 "(numpy and torch scalars are taken as numbers)")


def _clean(value, where: str = "results"):
    """JSON-safe: NaN/inf become None, tuples lists, numpy/torch scalars plain numbers. Anything else (a set, an
    array, a Path, an object) is refused with ConfigError naming where it is (results['a'][0])."""
    if isinstance(value, dict):
        return {str(k): _clean(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if not isinstance(value, float) and callable(getattr(value, "item", None)):  # numpy / torch scalars
        size = value.numel() if callable(getattr(value, "numel", None)) else getattr(value, "size", 1)
        if size != 1:
            raise ConfigError(where, _describe(value), f"{_JSON_ALLOWED}; convert an array with .tolist()")
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, bool, int)):
        return value
    raise ConfigError(where, _describe(value), _JSON_ALLOWED + (" (a set has no order: make it a sorted list)"
                                                              if isinstance(value, (set, frozenset)) else ""))


def _describe(value):
    text = repr(value)
    return value if len(text) <= 80 else f"a {type(value).__name__}"


def _check_dir(output_dir, field: str = "output_dir") -> Path:
    if not isinstance(output_dir, (str, os.PathLike)) or not os.fspath(output_dir).strip():
        raise ConfigError(field, output_dir, "a folder: a non-empty string or path")
    return Path(output_dir).expanduser()


def write_results(output_dir, results: dict, name: str = "results.json") -> Path:
    """Write atomically (temporary file, then rename): a crash never leaves half a file, and a failure leaves
    no temporary file. `results`: a dict of JSON-able values (ConfigError names the first one that is not)."""
    out = _check_dir(output_dir)
    if not isinstance(results, dict):
        raise ConfigError("results", _describe(results), "a dict of " + _JSON_ALLOWED)
    name = check_text("name", name)
    if os.path.basename(name) != name or name in (".", ".."):
        raise ConfigError("name", name, "a file name (no folder in it), such as 'results.json'")
    clean = _clean(results)  # refuses what JSON cannot hold, before any file is made
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".results-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(clean, f, indent=2, sort_keys=True)
        path = out / name
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


RUN_RECORD = "run.json"  # what every finetune run leaves in its output_dir (also after a Stop or a failure)
RUN_RECORD_KIND = "ftlab run"  # its "record" field: how ftlab.run_table tells it from a lab's results.json


def run_record(cfg, result, *, data: str, train_examples: int, eval_examples: int, trainable: int | None = None,
               total: int | None = None, memory: dict | None = None, error: BaseException | None = None) -> dict:
    """One run in flat fields a table reads as they are: what it was (model, method, data, the whole config),
    what it did (steps, first/last training loss, validation loss before/after, seconds, tokens/s), how it ended
    (status "finished", "stopped" or "failed", and why) and what it cost (trainable parameters; `memory`:
    memory_estimated_gib/_kind and memory_measured_gib/_kind). `result`: the TrainResult as far as the run got;
    `error`: the exception that ended it, if one did. A number not known (no validation data) is NaN here, null
    in the file."""
    stopped = bool(result.stopped or error is not None)
    why = result.stop_reason or (f"{type(error).__name__}: {str(error)[:300]}" if error is not None else "")
    return {"record": RUN_RECORD_KIND, "date": datetime.now().astimezone().isoformat(timespec="seconds"),
            "status": "failed" if error is not None else "stopped" if stopped else "finished",
            "error": f"{type(error).__name__}: {str(error)[:1000]}" if error is not None else "",
            "model": cfg.model, "method": cfg.method, "data": data, "train_examples": train_examples,
            "eval_examples": eval_examples, "dropped_examples": result.dropped_examples,
            "truncated_examples": result.truncated_examples, "steps": result.steps, "max_steps": cfg.max_steps,
            "train_loss_first": result.first_loss, "train_loss_last": result.last_loss,
            "eval_loss_before": result.eval_loss_before, "eval_loss_after": result.eval_loss_after,
            "eval_accuracy_before": result.eval_accuracy_before, "eval_accuracy_after": result.eval_accuracy_after,
            "seconds": result.seconds, "tokens": result.tokens, "tokens_per_s": result.tokens_per_s,
            "stopped": stopped, "stop_reason": why, "trainable_parameters": trainable, "total_parameters": total,
            **(memory or {}), "report_to": cfg.report_to, "saved_to": result.saved_to, "checkpoint": result.checkpoint,
            "losses": result.losses, "eval_losses": result.eval_losses, "config": cfg.to_dict()}


def read_results(output_dir, name: str = "results.json") -> dict:
    """What write_results wrote; DataError naming the file when it is missing or damaged."""
    out = _check_dir(output_dir)
    path = out / check_text("name", name)
    if not path.is_file():
        why = "is a folder" if path.is_dir() else "does not exist"
        raise DataError(f"output_dir={str(out)!r} holds no {name} ({path} {why}): write_results(output_dir, results) "
                        "writes it; did the lab or run finish with this output_dir?", field="output_dir")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"output_dir={str(out)!r}: {name} is not valid JSON ({e.msg} at line {e.lineno}, column "
                        f"{e.colno}): the file is damaged; run the lab again to rewrite it",
                        field="output_dir") from None
    except (UnicodeDecodeError, OSError) as e:
        raise DataError(f"output_dir={str(out)!r}: {name} cannot be read ({type(e).__name__}: {str(e)[:200]})",
                        field="output_dir") from None


@contextmanager
def atomic_dir(folder):
    """Yield a temporary folder beside `folder`; on success it replaces `folder` by renames.

    A run killed while writing leaves `folder` as it was (the temporary one is removed next time):
    the previous checkpoint stays readable. The swap is two renames on the same file system.
    """
    folder = Path(folder).expanduser()
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f".{folder.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        yield str(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = folder.parent / f".{folder.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def inside(root, name) -> Path:
    """`root/name`, refusing any name that would land outside `root` ("../x", "/etc", a symlink out), `root`
    itself ("", ".") and a blank or non-string name."""
    base = _check_dir(root, "root").resolve()
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("output_dir", name, f"a non-empty folder name inside {str(base)!r}")
    target = (base / name).resolve()
    if target == base:
        raise ConfigError("output_dir", name, f"a folder inside {str(base)!r}, not that folder itself")
    if base not in target.parents:
        raise ConfigError("output_dir", name, f"a folder inside {str(base)!r} (no '..' or absolute paths)")
    return target


def check_output_dir(path) -> Path:
    """The run's output folder exists (created if needed) and can be written; else ConfigError naming it."""
    p = _check_dir(path)  # "~/run": the home folder's run, never a folder named "~" here
    if p.exists() and not p.is_dir():
        raise ConfigError("output_dir", str(path), "a folder (this path is an existing file)")
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=p, prefix=".ftlab-write-test-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise ConfigError("output_dir", str(path), f"a folder this process can write ({e.strerror})") from None
    return p
