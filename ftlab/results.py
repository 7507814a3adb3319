"""Labs write results.json (numbers only, no secrets); tests read it back."""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
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
    out = Path(output_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".results-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(_clean(results), f, indent=2, sort_keys=True)
    path = out / name
    os.replace(tmp, path)
    return path


def read_results(output_dir, name: str = "results.json") -> dict:
    return json.loads((Path(output_dir).expanduser() / name).read_text())


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
    """`root/name`, refusing any name that would land outside `root` ("../x", "/etc", a symlink out)."""
    from ftlab.errors import ConfigError
    base = Path(root).expanduser().resolve()
    target = (base / str(name)).resolve()
    if target != base and base not in target.parents:
        raise ConfigError("output_dir", str(name), f"a folder inside {str(base)!r} (no '..' or absolute paths)")
    return target


def check_output_dir(path) -> Path:
    """The run's output folder exists (created if needed) and can be written; else ConfigError naming it."""
    from ftlab.errors import ConfigError
    p = Path(path).expanduser()  # "~/run": the home folder's run, never a folder named "~" here
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
