"""Labs write results.json (numbers only, no secrets); tests read it back."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


def _clean(value):
    """JSON-safe: NaN/inf become None, tuples lists, numpy/torch scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(output_dir, results: dict, name: str = "results.json") -> Path:
    """Write atomically (temporary file, then rename): a crash never leaves half a file."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".results-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(_clean(results), f, indent=2, sort_keys=True)
    path = out / name
    os.replace(tmp, path)
    return path


def read_results(output_dir, name: str = "results.json") -> dict:
    return json.loads((Path(output_dir) / name).read_text())
